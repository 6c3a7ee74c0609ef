"""Trust diagnostics (sans-Flask): deployment checks, message decoding, the headless trust test.

Used by ``idp-bridge check``, ``idp-bridge decode``, ``idp-bridge trust-test`` and the debug console.
Nothing here imports Flask at module level.
"""
