"""The public face: Thrift handler, client with leader discovery, and the `pulsegate` CLI."""
