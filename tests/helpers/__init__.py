"""What the tests share: broker processes, line clients, fake peers, fixtures' building blocks.

Test modules import from here and never from each other.
"""
