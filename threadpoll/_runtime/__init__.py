"""threadpoll's re-creation of Go's runtime network poller (the netpoll part of runtime/).

Imports only the standard library; knows nothing of sockets. See netpoll.py.

Go: runtime/netpoll.go and its backends
"""
