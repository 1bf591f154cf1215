"""Hardware access, one module per port; nothing outside this package touches hardware."""
