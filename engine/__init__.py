"""stagevox.engine: the live channel (UDP/RTP streaming, server, client).

Not built yet; see the project's issues.
"""
