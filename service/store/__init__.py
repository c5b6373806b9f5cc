"""MongoDB persistence: accounts, OAuth apps, and the keyring that encrypts their secrets."""
