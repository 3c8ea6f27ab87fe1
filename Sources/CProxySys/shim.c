#define _GNU_SOURCE
#include "CProxySys.h"
#include <sys/prctl.h>
#include <crypt.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <malloc.h>

int cproxy_peer_credentials(int fd, int *pid, unsigned int *uid, unsigned int *gid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int cproxy_malloc_trim(size_t pad) { return malloc_trim(pad); }

extern char **environ;

int cproxy_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

ssize_t cproxy_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
    return splice(fd_in, NULL, fd_out, NULL, len, flags);
}

int cproxy_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

ssize_t cproxy_send_fds(int sock, const void *data, size_t len, const int *fds, int count) {
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 253)];
    if (count > 0) {
        if (count > 253) { errno = EINVAL; return -1; }
        memset(control, 0, sizeof(control));
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

ssize_t cproxy_recv_fds(int sock, void *data, size_t len, int *fds, int max, int *count, int *truncated) {
    struct iovec iov = { .iov_base = data, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 253)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    *count = 0;
    *truncated = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int n_fds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < n_fds; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                if (*count < max) fds[(*count)++] = fd; else { close(fd); *truncated = 1; }
            }
        }
    }
    return n;
}

int cproxy_errno(void) { return errno; }

int cproxy_set_dumpable(void) { return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); }

void *cproxy_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len) {
    return memmem(haystack, haystack_len, needle, needle_len);
}

int cproxy_open_directory(const char *path) { return open(path, O_PATH | O_DIRECTORY | O_CLOEXEC); }

char **cproxy_environ(void) { return environ; }

int cproxy_crypt_matches(const char *password, const char *hash) {
    struct crypt_data *data = calloc(1, sizeof(struct crypt_data));
    if (data == NULL) return 0;
    const char *out = crypt_r(password, hash, data);
    int ok = out != NULL && out[0] != '*' && strcmp(out, hash) == 0;
    free(data);
    return ok;
}

int cproxy_malloc_arenas(int count) { return mallopt(M_ARENA_MAX, count); }

#include <spawn.h>
int cproxy_spawn_close_from(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}
