"""Published clinical scores computed beside the network."""
