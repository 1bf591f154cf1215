"""One pile, or each pile of a fleet, as an OCPP 2.1 charging station (docs/grid-services.md)."""
