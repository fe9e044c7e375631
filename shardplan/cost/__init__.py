"""The cost model: compute, memory and communication time of a placed layout."""
