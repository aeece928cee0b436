"""The pure core: models and decisions. No I/O, no asyncio, no imports from the rest of vimha."""
