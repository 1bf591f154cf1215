"""V2G pile edge controller firmware."""

VERSION = "0.1.0"
