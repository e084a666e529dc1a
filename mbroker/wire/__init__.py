"""The sans-IO codec: bytes to frames and frames to bytes, with no sockets and no Twisted.

Every byte the broker writes on the wire is built here; every byte it reads is decoded here.
"""
