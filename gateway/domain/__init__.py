"""Pure rules of the gateway and the ports it talks through.

Imports only the standard library and msgspec: no I/O, no framework, no SDK.
"""
