// CProxySys: the few kernel interfaces the Glibc module does not export to Swift.
// Kept to one function per syscall, no logic, in the manner of swift-nio's CNIOLinux.
#ifndef CPROXYSYS_H
#define CPROXYSYS_H

#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/eventfd.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>

/// pipe2(2); needs _GNU_SOURCE, which the Glibc module lacks.
int cproxy_pipe2(int fds[2], int flags);
/// splice(2) between a socket and a pipe.
ssize_t cproxy_splice(int fd_in, int fd_out, size_t len, unsigned int flags);
/// accept4(2); needs _GNU_SOURCE.
int cproxy_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
/// Sends `count` descriptors with SCM_RIGHTS alongside `data`.
ssize_t cproxy_send_fds(int sock, const void *data, size_t len, const int *fds, int count);
/// Receives up to `max` descriptors (with MSG_CMSG_CLOEXEC); sets *count to how many arrived
/// and *truncated when the kernel or the limit dropped some (MSG_CTRUNC).
ssize_t cproxy_recv_fds(int sock, void *data, size_t len, int *fds, int max, int *count, int *truncated);
/// The C library's errno, read without the Swift overlay's indirection.
int cproxy_errno(void);
/// prctl(PR_SET_DUMPABLE, 1): the process may dump core again after a change of user.
int cproxy_set_dumpable(void);
/// memmem(3): where `needle` first occurs in `haystack`, or NULL; needs _GNU_SOURCE.
void *cproxy_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34): descriptors from `from` up are closed in the child.
int cproxy_spawn_close_from(void *actions, int from);
/// 1 when crypt(3) of `password` with the settings of `hash` gives `hash` (libcrypt's
/// crypt_r, thread-safe), 0 otherwise or when the hash's method is unknown.
int cproxy_crypt_matches(const char *password, const char *hash);

// open(2) of a directory with O_PATH (a _GNU_SOURCE flag), for the *at() calls.
int cproxy_open_directory(const char *path);
/// The pid, uid and gid of the peer of a UNIX socket (SO_PEERCRED); -1 on error.
int cproxy_peer_credentials(int fd, int *pid, unsigned int *uid, unsigned int *gid);
/// malloc_trim(3): returns free heap pages to the kernel.
int cproxy_malloc_trim(size_t pad);
/// Limits glibc to `count` malloc arenas (mallopt M_ARENA_MAX); 1 on success.
int cproxy_malloc_arenas(int count);
/// The process environment block (`environ`).
char **cproxy_environ(void);

#endif
