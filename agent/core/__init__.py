"""The pure core: every decision, no I/O, no asyncio, time passed in."""
