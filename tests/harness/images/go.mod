module palisade.local/testimages

go 1.26
