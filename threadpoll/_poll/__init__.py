"""threadpoll's re-creation of Go's internal/poll: FDMutex, the pollDesc handle and FD.

Builds on threadpoll._runtime and never asks which backend runs. See fd_unix.py.

Go: internal/poll
"""
