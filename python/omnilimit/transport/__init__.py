"""omnilimit between an LLM SDK and the network: what a request may cost (``estimate``), what a
response says it used (``usage``), and what the provider charges in the end (``settle``). The HTTP
transports that use them come with their packages' extras."""
