"""Every variant, one short module each family; importing this package registers them all."""
