"""How the clients of a round are trained, and with how many torch threads."""
