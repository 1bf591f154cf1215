"""The simulated plant: converter, battery and site meter behind a pymodbus RTU server."""
