"""The benchmark suite behind ``omnilimit bench``: omnilimit against the standard library's locks,
OmniGen's reference limiters and the third-party rate limiters that are installed."""
