"""The mutating admission webhook (``palisade injector``)."""
