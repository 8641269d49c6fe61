"""The pieces of bench/pull.py: the content and its servers, the WAN emulator, the clients compared."""
