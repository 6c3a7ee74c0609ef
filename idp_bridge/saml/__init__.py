"""The sans-I/O SAML core. Nothing in this package imports Flask or touches the network."""
