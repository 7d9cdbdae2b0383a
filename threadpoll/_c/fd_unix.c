/* The C core's half of internal/poll (to come: fdMutex and the FD fast paths).
 *
 * Go: internal/poll/fd_unix.go
 */
#include "netpoll.h"

/* Go: none */
int
tp_fd_init_module(PyObject *m)
{
    (void)m;
    return 0;
}
