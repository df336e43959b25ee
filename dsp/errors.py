"""The package's error classes: one root, three kinds.

Every error stagevox raises on purpose is a ``StagevoxError``, so callers can
catch the package's errors in one clause::

    StagevoxError
    ├── ParameterError   (also ValueError)   a bad argument, parameter or file
    ├── ProtocolError    (also ValueError)   a datagram, packet, message or token
    │                                        that cannot be parsed or is not authentic
    └── RefusedError     (also RuntimeError) the server refused a request

The module sits at the bottom of the layers (it imports nothing), so any part
of the package may import it; ``stagevox.dsp`` and ``stagevox.engine`` export
the classes. Modules derive their own errors from these (``AudioFileError``,
``PresetError``, ``PacketError``, ``TokenError``, ...).
"""

__all__ = ["ParameterError", "ProtocolError", "RefusedError", "StagevoxError"]


class StagevoxError(Exception):
    """The root of every error the package raises on purpose."""


class ParameterError(StagevoxError, ValueError):
    """A bad argument, parameter value or file content.

    It stays a ``ValueError`` so that ``except ValueError`` keeps working.
    """


class ProtocolError(StagevoxError, ValueError):
    """A datagram, packet, message or token that cannot be parsed or is not
    authentic. It stays a ``ValueError``."""


class RefusedError(StagevoxError, RuntimeError):
    """A server refused a request.

    ``code`` is the refusal code (one of ``engine.control.REFUSAL_CODES``) and
    ``reason`` the server's text; the message reads ``"refused (code): reason"``.
    """

    def __init__(self, code, reason):
        super().__init__(f"refused ({code}): {reason}")
        self.code = code
        self.reason = reason

    def __reduce__(self):
        """Pickle with the two constructor arguments (not the message)."""
        return (type(self), (self.code, self.reason))
