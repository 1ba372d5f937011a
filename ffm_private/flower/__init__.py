"""Deployment on Flower 1.41: a ServerApp and a ClientApp running the in-process mathematics.

Only the modules of this package import ``flwr``; the core imports fast without it. The
transport-free parts (:mod:`.node`, :mod:`.node_state`, :mod:`.run`) are plain Python, so the
same node and server logic is tested with and without real Flower processes.
"""
