/* c-ares beside our DNS client (DECISIONS, "The DNS client"): N resolutions of one name, one
 * after the other, each a query for A records and the parse of the answer into addresses,
 * driven by epoll as a loop of ours would drive it. Run under callgrind at N and 3N, the
 * difference over 2N is the cost of one resolution.
 *   cc -O2 -o cares cares.c -lcares && ./cares 127.0.0.1 PORT NAME N */
#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

static int done, addresses;

static void answered(void *arg, int status, int timeouts, unsigned char *abuf, int alen) {
    (void)arg; (void)timeouts;
    done = 1;
    if (status != ARES_SUCCESS) { fprintf(stderr, "query: %s\n", ares_strerror(status)); return; }
    struct ares_addrttl ttls[512];
    int n = 512;
    struct hostent *host = NULL;
    if (ares_parse_a_reply(abuf, alen, &host, ttls, &n) == ARES_SUCCESS) {
        addresses = n;
        ares_free_hostent(host);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: cares SERVER PORT NAME N\n"); return 2; }
    int count = atoi(argv[4]);
    ares_library_init(ARES_LIB_INIT_ALL);
    ares_channel channel;
    struct ares_options options = { .flags = ARES_FLAG_EDNS, .ednspsz = 8192, .udp_port = (unsigned short)atoi(argv[2]) };
    if (ares_init_options(&channel, &options, ARES_OPT_FLAGS | ARES_OPT_EDNSPSZ | ARES_OPT_UDP_PORT) != ARES_SUCCESS) return 1;
    if (ares_set_servers_csv(channel, argv[1]) != ARES_SUCCESS) return 1;
    int ep = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        done = 0;
        ares_query(channel, argv[3], 1 /* IN */, 1 /* A */, answered, NULL);
        while (!done) {
            ares_socket_t socks[ARES_GETSOCK_MAXNUM];
            int bits = ares_getsock(channel, socks, ARES_GETSOCK_MAXNUM);
            for (int s = 0; s < ARES_GETSOCK_MAXNUM; s++) {
                if (!ARES_GETSOCK_READABLE(bits, s)) continue;
                struct epoll_event ev = { .events = EPOLLIN, .data.fd = socks[s] };
                epoll_ctl(ep, EPOLL_CTL_ADD, socks[s], &ev);   /* EEXIST after the first: fine */
            }
            struct epoll_event evs[8];
            int n = epoll_wait(ep, evs, 8, 1000);
            if (n == 0) { ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); continue; }
            for (int e = 0; e < n; e++) ares_process_fd(channel, evs[e].data.fd, ARES_SOCKET_BAD);
        }
    }
    printf("%d resolutions, %d addresses in the last\n", count, addresses);
    ares_destroy(channel);
    ares_library_cleanup();
    return 0;
}
