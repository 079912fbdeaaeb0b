"""The policy distributor (``palisade distributor``)."""
