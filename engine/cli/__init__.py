"""The compression-engine command line: parse and dispatch (main), shared plumbing (common), run/demo, and the tools
around runs."""
