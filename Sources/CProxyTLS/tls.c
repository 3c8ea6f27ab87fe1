#include "CProxyTLS.h"
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <pthread.h>
#include <sys/stat.h>
#include <dirent.h>
#include <sys/socket.h>
#include <errno.h>
#include <time.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <limits.h>
#include <stdarg.h>

static void describe_error(const char *what, const char *path, char *error, size_t size) {
    unsigned long code = ERR_get_error();
    char reason[256] = "";
    if (code) ERR_error_string_n(code, reason, sizeof reason);
    snprintf(error, size, "%s '%s'%s%s", what, path, code ? ": " : "", reason);
    ERR_clear_error();
}

/// ALPN: the first of our protocols the client offers; none in common: no ALPN answer
/// (the client goes on without, as HTTP/1.1 clients do).
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl;
    const unsigned char *ours = (const unsigned char *)arg;
    unsigned char *chosen = NULL;
    unsigned char length = 0;
    if (SSL_select_next_proto(&chosen, &length, ours + 1, ours[0], in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    *outlen = length;
    return SSL_TLSEXT_ERR_OK;
}

static int fail(SSL_CTX *ctx, const char *what, const char *value, char *error, size_t size) {
    describe_error(what, value, error, size);
    SSL_CTX_free(ctx);
    return 0;
}

static void enable_resumption(SSL_CTX *ctx, const char *session_context);
static int load_authorities(SSL_CTX *ctx, const char *ca_file, const char *crl_file, char *error, size_t error_size);

/// Loads a PEM file's bytes into `ctx`: the first certificate, the chain after it, the key
/// anywhere in it (as SSL_CTX_use_certificate_chain_file and _PrivateKey_file read a file).
static int use_pem(SSL_CTX *ctx, const char *name, const void *bytes, size_t length, char *error, size_t error_size) {
    if (length > INT_MAX) { describe_error("too large:", name, error, error_size); return 0; }
    BIO *bio = BIO_new_mem_buf(bytes, (int)length);
    if (!bio) { describe_error("out of memory for", name, error, error_size); return 0; }
    X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    int ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    if (!ok) { BIO_free(bio); describe_error("cannot load the certificate chain from", name, error, error_size); return 0; }
    SSL_CTX_clear_chain_certs(ctx);
    X509 *ca;
    while ((ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
            X509_free(ca);
            BIO_free(bio);
            describe_error("cannot load the certificate chain from", name, error, error_size);
            return 0;
        }
    }
    // The end of the data is where the chain stops; anything else is an error.
    unsigned long last = ERR_peek_last_error();
    if (last && !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
        BIO_free(bio);
        describe_error("cannot load the certificate chain from", name, error, error_size);
        return 0;
    }
    ERR_clear_error();
    BIO_free(bio);
    bio = BIO_new_mem_buf(bytes, (int)length);
    if (!bio) { describe_error("out of memory for", name, error, error_size); return 0; }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ok = key && SSL_CTX_use_PrivateKey(ctx, key) == 1;
    EVP_PKEY_free(key);
    if (!ok) { describe_error("cannot load the private key from", name, error, error_size); return 0; }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        describe_error("the private key does not match the certificate in", name, error, error_size);
        return 0;
    }
    return 1;
}

/// What a session takes from the context SNI chose for it (a crt-list line's own versions,
/// ciphers, curves and options), which SSL_set_SSL_CTX does not carry over by itself.
struct own_settings { int min_version, max_version, no_tickets, prefer_client; char *ciphers, *ciphersuites, *curves; };
static int own_index = -1;

static char *copy_or_null(const char *text) { return text ? strdup(text) : NULL; }

static void free_own(struct own_settings *o) {
    if (!o) return;
    free(o->ciphers);
    free(o->ciphersuites);
    free(o->curves);
    free(o);
}

void *cproxy_tls_server_context(const char *pem, const void *pem_bytes, size_t pem_length,
                                const struct cproxy_tls_settings *s, char *error, size_t error_size) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { describe_error("cannot create a TLS context for", pem, error, error_size); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, s && s->min_version ? s->min_version : TLS1_2_VERSION);
    if (s && s->max_version) SSL_CTX_set_max_proto_version(ctx, s->max_version);
    // A peer that closes without close_notify (most clients) ends the stream, not the session:
    // it stays resumable (HTTP has its own framing to detect truncation).
    long options = SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (!(s && s->prefer_client_ciphers)) options |= SSL_OP_CIPHER_SERVER_PREFERENCE;
    if (s && s->no_tickets) options |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, options);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    // Whole socket reads into OpenSSL's buffer, not a header then a body per record.
    SSL_CTX_set_read_ahead(ctx, 1);
    // DHE suites get parameters sized to the certificate's key (tune.ssl.default-dh-param).
    SSL_CTX_set_dh_auto(ctx, 1);
    if (s && s->ciphers && SSL_CTX_set_cipher_list(ctx, s->ciphers) != 1)
        return fail(ctx, "no cipher of", s->ciphers, error, error_size), NULL;
    if (s && s->ciphersuites && SSL_CTX_set_ciphersuites(ctx, s->ciphersuites) != 1)
        return fail(ctx, "no TLS 1.3 cipher suite of", s->ciphersuites, error, error_size), NULL;
    if (s && s->curves && SSL_CTX_set1_groups_list(ctx, s->curves) != 1)
        return fail(ctx, "unknown curves in", s->curves, error, error_size), NULL;
    if (s && s->alpn && s->alpn_length > 0 && s->alpn_length < 256) {
        // Kept for the context's life: one length byte, then the wire-format list.
        unsigned char *list = OPENSSL_malloc(s->alpn_length + 1);
        if (!list) return fail(ctx, "out of memory for the ALPN list of", pem, error, error_size), NULL;
        list[0] = (unsigned char)s->alpn_length;
        memcpy(list + 1, s->alpn, s->alpn_length);
        SSL_CTX_set_ex_data(ctx, 0, list);
        SSL_CTX_set_alpn_select_cb(ctx, select_alpn, list);
    }
    if (!use_pem(ctx, pem, pem_bytes, pem_length, error, error_size)) { SSL_CTX_free(ctx); return NULL; }
    if (s && (s->ca_file || s->crl_file)) {
        if (!load_authorities(ctx, s->ca_file, s->crl_file, error, error_size)) return NULL;
        // The authorities' names, so that a client knows which certificate to present.
        if (s->ca_file && strcmp(s->ca_file, "@system-ca") != 0) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->ca_file);
            if (names) SSL_CTX_set_client_CA_list(ctx, names);
            ERR_clear_error();
        }
    }
    if (s && s->verify) SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (s->verify == 2 ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    enable_resumption(ctx, s ? s->session_context : NULL);
    if (own_index < 0) own_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    struct own_settings *own = calloc(1, sizeof *own);
    if (!own) return fail(ctx, "out of memory for the settings of", pem, error, error_size), NULL;
    own->min_version = s && s->min_version ? s->min_version : TLS1_2_VERSION;
    own->max_version = s ? s->max_version : 0;
    own->no_tickets = s && s->no_tickets;
    own->prefer_client = s && s->prefer_client_ciphers;
    own->ciphers = s ? copy_or_null(s->ciphers) : NULL;
    own->ciphersuites = s ? copy_or_null(s->ciphersuites) : NULL;
    own->curves = s ? copy_or_null(s->curves) : NULL;
    SSL_CTX_set_ex_data(ctx, own_index, own);
    return ctx;
}

/// The certificates SNI chooses among, kept on the first context (ex_data slot 1).
struct sni_entry { char *name; SSL_CTX *ctx; int negative; };
struct sni_table { struct sni_entry *entries; size_t count; SSL_CTX **owned; size_t owned_count; int strict; };

static int sni_index = -1;

static struct sni_table *table_of(SSL_CTX *ctx) {
    return sni_index < 0 ? NULL : (struct sni_table *)SSL_CTX_get_ex_data(ctx, sni_index);
}

/// A crt-list line's `!name` filter keeps its certificate from serving that exact name.
static int excluded(struct sni_table *t, const char *name, SSL_CTX *ctx) {
    for (size_t i = 0; i < t->count; i++)
        if (t->entries[i].negative && t->entries[i].ctx == ctx && strcasecmp(t->entries[i].name, name) == 0) return 1;
    return 0;
}

static SSL_CTX *lookup(struct sni_table *t, const char *name) {
    for (size_t i = 0; i < t->count; i++) {
        struct sni_entry *e = &t->entries[i];
        if (!e->negative && strcasecmp(e->name, name) == 0 && !excluded(t, name, e->ctx)) return e->ctx;
    }
    const char *dot = strchr(name, '.');
    if (!dot) return NULL;
    for (size_t i = 0; i < t->count; i++) {
        struct sni_entry *e = &t->entries[i];
        const char *n = e->name;
        if (!e->negative && n[0] == '*' && n[1] == '.' && strcasecmp(n + 1, dot) == 0 && !excluded(t, name, e->ctx)) return e->ctx;
    }
    return NULL;
}

/// Moves a session to the context SNI chose, with that context's own settings: the
/// certificate, the client-certificate policy, versions, ciphers, curves, options.
static void switch_context(SSL *ssl, SSL_CTX *chosen) {
    SSL_set_SSL_CTX(ssl, chosen);
    // The chosen certificate's client-certificate policy (a crt-list line's `verify`).
    SSL_set_verify(ssl, SSL_CTX_get_verify_mode(chosen), NULL);
    SSL_set_client_CA_list(ssl, SSL_dup_CA_list(SSL_CTX_get_client_CA_list(chosen)));
    struct own_settings *o = own_index < 0 ? NULL : SSL_CTX_get_ex_data(chosen, own_index);
    if (!o) return;
    SSL_set_min_proto_version(ssl, o->min_version);
    SSL_set_max_proto_version(ssl, o->max_version);
    if (o->ciphers) SSL_set_cipher_list(ssl, o->ciphers);
    if (o->ciphersuites) SSL_set_ciphersuites(ssl, o->ciphersuites);
    if (o->curves) SSL_set1_groups_list(ssl, o->curves);
    if (o->no_tickets) SSL_set_options(ssl, SSL_OP_NO_TICKET); else SSL_clear_options(ssl, SSL_OP_NO_TICKET);
    if (o->prefer_client) SSL_clear_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE); else SSL_set_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
    ERR_clear_error();
}

/// The server name a ClientHello carries (host_name type), copied into `name`; 0 if none.
static int hello_server_name(SSL *ssl, char *name, size_t size) {
    const unsigned char *p;
    size_t length;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &length) || length < 5) return 0;
    size_t list = (size_t)p[0] << 8 | p[1];
    if (list + 2 > length || p[2] != TLSEXT_NAMETYPE_host_name) return 0;
    size_t n = (size_t)p[3] << 8 | p[4];
    if (n == 0 || n + 5 > length || n >= size || memchr(p + 5, 0, n)) return 0;
    memcpy(name, p + 5, n);
    name[n] = 0;
    return 1;
}

/// SNI chooses the certificate as the ClientHello arrives, before the version and the
/// ciphers are settled, so that a crt-list line's own settings apply.
static int choose_certificate(SSL *ssl, int *alert, void *arg) {
    struct sni_table *t = (struct sni_table *)arg;
    char name[256];
    SSL_CTX *chosen = (t && hello_server_name(ssl, name, sizeof name)) ? lookup(t, name) : NULL;
    if (chosen) {
        switch_context(ssl, chosen);
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (t && t->strict) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

void cproxy_tls_context_free(void *context);
static int file_keys_index;   // `tls-ticket-keys` on a context (defined with the ticket keys)

static int add_name(struct sni_table *t, const char *name, size_t length, SSL_CTX *ctx) {
    struct sni_entry *grown = realloc(t->entries, (t->count + 1) * sizeof *grown);
    if (!grown) return 0;
    t->entries = grown;
    char *copy = malloc(length + 1);
    if (!copy) return 0;
    memcpy(copy, name, length);
    copy[length] = 0;
    t->entries[t->count].name = copy;
    t->entries[t->count].ctx = ctx;
    t->entries[t->count].negative = 0;
    t->count++;
    return 1;
}

/// The table on `ctx`, made (with the SNI callback) on first use; NULL when out of memory.
static struct sni_table *table_for(SSL_CTX *ctx) {
    if (sni_index < 0) sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    struct sni_table *t = table_of(ctx);
    if (t) return t;
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    SSL_CTX_set_ex_data(ctx, sni_index, t);
    SSL_CTX_set_client_hello_cb(ctx, choose_certificate, t);
    return t;
}

/// Enters the DNS names of `owner`'s certificate (subjectAltName, else CN): 1 if any.
static int add_names(struct sni_table *t, SSL_CTX *owner) {
    X509 *cert = SSL_CTX_get0_certificate(owner);
    if (!cert) return 0;
    int named = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_DNS) continue;
        const unsigned char *data = ASN1_STRING_get0_data(g->d.dNSName);
        int length = ASN1_STRING_length(g->d.dNSName);
        if (length > 0 && add_name(t, (const char *)data, (size_t)length, owner)) named = 1;
    }
    GENERAL_NAMES_free(names);
    if (!named) {
        char cn[256];
        int length = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        if (length > 0 && add_name(t, cn, (size_t)length, owner)) named = 1;
    }
    return named;
}

/// `context`'s SNI table, which now owns `other` (freed here when that fails): NULL then.
static struct sni_table *adopt(SSL_CTX *ctx, SSL_CTX *add) {
    struct sni_table *t = table_for(ctx);
    if (!t) { cproxy_tls_context_free(add); return NULL; }
    SSL_CTX **owned = realloc(t->owned, (t->owned_count + 1) * sizeof *owned);
    if (!owned) { cproxy_tls_context_free(add); return NULL; }
    t->owned = owned;
    t->owned[t->owned_count++] = add;
    return t;
}

int cproxy_tls_add_sni(void *context, void *other) {
    struct sni_table *t = adopt((SSL_CTX *)context, (SSL_CTX *)other);
    return t ? add_names(t, (SSL_CTX *)other) : 0;
}

int cproxy_tls_add_sni_named(void *context, void *other, const char *const *names, int count) {
    struct sni_table *t = adopt((SSL_CTX *)context, (SSL_CTX *)other);
    if (!t) return 0;
    for (int i = 0; i < count; i++) {
        // `!name`: a negative filter, which excludes the name from this certificate.
        int negative = names[i][0] == '!';
        const char *name = names[i] + negative;
        if (!add_name(t, name, strlen(name), (SSL_CTX *)other)) return 0;
        t->entries[t->count - 1].negative = negative;
    }
    // Only exclusions: the certificate serves its own names, less those.
    int positive = 0;
    for (int i = 0; i < count; i++) if (names[i][0] != '!') positive = 1;
    if (!positive && !add_names(t, (SSL_CTX *)other)) return 0;
    return 1;
}

int cproxy_tls_set_strict_sni(void *context) {
    SSL_CTX *ctx = (SSL_CTX *)context;
    struct sni_table *t = table_for(ctx);
    if (!t) return 0;
    t->strict = 1;
    // The first certificate is chosen only by its own names now.
    return add_names(t, ctx);
}

void cproxy_tls_context_free(void *context) {
    SSL_CTX *ctx = (SSL_CTX *)context;
    OPENSSL_free(SSL_CTX_get_ex_data(ctx, 0));
    if (own_index >= 0) free_own(SSL_CTX_get_ex_data(ctx, own_index));
    if (file_keys_index >= 0) free(SSL_CTX_get_ex_data(ctx, file_keys_index));
    struct sni_table *t = table_of(ctx);
    if (t) {
        for (size_t i = 0; i < t->count; i++) free(t->entries[i].name);
        for (size_t i = 0; i < t->owned_count; i++) cproxy_tls_context_free(t->owned[i]);
        free(t->entries);
        free(t->owned);
        free(t);
    }
    SSL_CTX_free(ctx);
}

int cproxy_tls_expired(void *context, char *when, size_t when_size) {
    X509 *cert = SSL_CTX_get0_certificate((SSL_CTX *)context);
    if (!cert) return 0;
    const ASN1_TIME *end = X509_get0_notAfter(cert);
    if (X509_cmp_current_time(end) >= 0) return 0;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio) {
        ASN1_TIME_print(bio, end);
        int n = BIO_read(bio, when, (int)when_size - 1);
        when[n > 0 ? n : 0] = 0;
        BIO_free(bio);
    } else if (when_size) {
        when[0] = 0;
    }
    return 1;
}


// MARK: the socket under a session

/// Our socket BIO (HAProxy's lesson): what OpenSSL writes while it reads (a handshake
/// flight, the session tickets after the client's Finished) is held and sent in one go when
/// the call returns; a peer that closed before it was sent does not get it (a client that
/// handshakes and leaves takes no tickets); and once a write failed for good (EPIPE,
/// ECONNRESET), nothing more is written: no syscall is spent on a dead socket.
struct socket_io {
    int fd;
    int gone;             // a write failed for good
    int peer_fin;         // recv returned 0
    int got_data;         // the peer sent application bytes (the wrappers say so)
    int got_bytes;        // the peer sent any byte at all
    int holding;          // inside a read or handshake: writes are held
    int held_in_scratch;  // `held` is the thread's scratch buffer (during a call only)
    unsigned char *held;
    size_t held_length, held_capacity;
};

/// The thread's buffer for what a call holds. A session keeps a buffer of its own only for
/// bytes the socket could not take when the call returned (rare), so a handshake allocates
/// nothing for its flight. Freed when the thread ends.
static __thread unsigned char *scratch;
static __thread size_t scratch_capacity;
static pthread_key_t scratch_key;
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;
static void make_scratch_key(void) { (void)pthread_key_create(&scratch_key, free); }

/// Writes are held from here until `release_held`, in the thread's scratch buffer unless
/// the session still keeps bytes of its own.
static void begin_holding(struct socket_io *io) {
    io->holding = 1;
    if (!io->held) {
        io->held = scratch;
        io->held_capacity = scratch_capacity;
        io->held_in_scratch = 1;
    }
}

/// The call is over: bytes still held move out of the scratch buffer into the session's own
/// (when that allocation fails the connection cannot go on: it is marked gone).
static void leave_scratch(struct socket_io *io) {
    if (!io->held_in_scratch) return;
    io->held_in_scratch = 0;
    if (!io->held_length) { io->held = NULL; io->held_capacity = 0; return; }
    unsigned char *own = malloc(io->held_length);
    if (!own) { io->held = NULL; io->held_capacity = 0; io->held_length = 0; io->gone = 1; return; }
    memcpy(own, io->held, io->held_length);
    io->held = own;
    io->held_capacity = io->held_length;
}

static BIO_METHOD *socket_method;
static pthread_once_t socket_method_once = PTHREAD_ONCE_INIT;

/// Sends what is held: 1 when all is out, 0 when the socket is full, -1 when it is dead.
static int send_held(struct socket_io *io) {
    size_t sent = 0;
    while (sent < io->held_length) {
        ssize_t n = send(io->fd, io->held + sent, io->held_length - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) { sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (sent) memmove(io->held, io->held + sent, io->held_length - sent);
        io->held_length -= sent;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        io->gone = 1;
        io->held_length = 0;
        return -1;
    }
    io->held_length = 0;
    return 1;
}

static int socket_write(BIO *b, const char *in, int length) {
    struct socket_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (io->gone) { errno = EPIPE; return -1; }
    if (io->holding) {
        if (io->held_length + (size_t)length > io->held_capacity) {
            size_t capacity = io->held_capacity ? io->held_capacity : 4096;
            while (capacity < io->held_length + (size_t)length) capacity *= 2;
            unsigned char *grown = realloc(io->held, capacity);
            if (!grown) { errno = ENOMEM; return -1; }
            io->held = grown;
            io->held_capacity = capacity;
            if (io->held_in_scratch) {
                pthread_once(&scratch_key_once, make_scratch_key);
                scratch = grown;
                scratch_capacity = capacity;
                (void)pthread_setspecific(scratch_key, grown);
            }
        }
        memcpy(io->held + io->held_length, in, (size_t)length);
        io->held_length += (size_t)length;
        return length;
    }
    if (io->held_length) {
        int r = send_held(io);
        if (r < 0) { errno = EPIPE; return -1; }
        if (r == 0) { BIO_set_retry_write(b); return -1; }
    }
    for (;;) {
        ssize_t n = send(io->fd, in, (size_t)length, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) return (int)n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) { BIO_set_retry_write(b); return -1; }
        io->gone = 1;
        return -1;
    }
}

static int socket_read(BIO *b, char *out, int length) {
    struct socket_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = recv(io->fd, out, (size_t)length, MSG_DONTWAIT);
        if (n > 0) { io->got_bytes = 1; return (int)n; }
        if (n == 0) { io->peer_fin = 1; return 0; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) { BIO_set_retry_read(b); return -1; }
        if (errno == ECONNRESET) io->gone = 1;
        return -1;
    }
}

static long socket_ctrl(BIO *b, int command, long number, void *pointer) {
    (void)b; (void)number; (void)pointer;
    switch (command) {
    case BIO_CTRL_FLUSH: return 1;   // the wrappers send what is held when the call returns
    case BIO_CTRL_PUSH: case BIO_CTRL_POP: return 0;
    default: return 0;
    }
}

static int socket_destroy(BIO *b) {
    struct socket_io *io = BIO_get_data(b);
    if (io) {
        if (!io->held_in_scratch) free(io->held);
        free(io);
    }
    BIO_set_data(b, NULL);
    return 1;
}

static void make_socket_method(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "proxy socket");
    if (!m) return;
    BIO_meth_set_write(m, socket_write);
    BIO_meth_set_read(m, socket_read);
    BIO_meth_set_ctrl(m, socket_ctrl);
    BIO_meth_set_destroy(m, socket_destroy);
    socket_method = m;
}

/// Puts our socket BIO under `ssl`: 0 when out of memory.
static int attach_socket(SSL *ssl, int fd) {
    pthread_once(&socket_method_once, make_socket_method);
    if (!socket_method) return 0;
    struct socket_io *io = calloc(1, sizeof *io);
    if (!io) return 0;
    io->fd = fd;
    BIO *b = BIO_new(socket_method);
    if (!b) { free(io); return 0; }
    BIO_set_data(b, io);
    BIO_set_init(b, 1);
    SSL_set_bio(ssl, b, b);
    return 1;
}

static struct socket_io *io_of(SSL *ssl) { return BIO_get_data(SSL_get_rbio(ssl)); }

/// After a read or a handshake step: what OpenSSL wrote meanwhile goes out now, unless the
/// peer already left (`closed`) and it was only post-handshake tickets.
static void release_held(SSL *ssl, struct socket_io *io, int closed) {
    io->holding = 0;
    if (io->held_length) {
        if (closed && SSL_is_server(ssl) && SSL_is_init_finished(ssl)) io->held_length = 0;
        else (void)send_held(io);
    }
    leave_scratch(io);
}

void *cproxy_tls_accept(void *context, int fd) {
    SSL *ssl = SSL_new((SSL_CTX *)context);
    if (!ssl) { ERR_clear_error(); return NULL; }
    if (!attach_socket(ssl, fd)) { SSL_free(ssl); ERR_clear_error(); return NULL; }
    SSL_set_accept_state(ssl);
    return ssl;
}

void cproxy_tls_free(void *session) {
    SSL *ssl = (SSL *)session;
    // A peer that closes without close_notify (most browsers) leaves a good session: it
    // stays in the cache (OpenSSL would drop it as if the connection had failed).
    if (SSL_is_init_finished(ssl)) SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
}

static long outcome(SSL *ssl, int ret) {
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ: return CPROXY_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return CPROXY_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return CPROXY_TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        // The peer's FIN without close_notify (OpenSSL 3 reports it as SSL_ERROR_SSL with
        // SSL_R_UNEXPECTED_EOF_WHILE_READING, unless SSL_OP_IGNORE_UNEXPECTED_EOF).
        ERR_clear_error();
        return CPROXY_TLS_ERROR;
    default:
        ERR_clear_error();
        return CPROXY_TLS_ERROR;
    }
}

long cproxy_tls_read(void *session, void *buffer, size_t length) {
    SSL *ssl = (SSL *)session;
    struct socket_io *io = io_of(ssl);
    size_t n = 0;
    ERR_clear_error();
    if (io->held_length && send_held(io) == 0) return CPROXY_TLS_WANT_WRITE;
    begin_holding(io);
    int ret = SSL_read_ex(ssl, buffer, length, &n);
    if (ret == 1) {
        io->got_data = 1;
        release_held(ssl, io, 0);
        return (long)n;
    }
    long r = outcome(ssl, ret);
    release_held(ssl, io, r == CPROXY_TLS_CLOSED || r == CPROXY_TLS_ERROR);
    // Held bytes the socket could not take: wait for it to be writable, then read again.
    if (r == CPROXY_TLS_WANT_READ && io->held_length) return CPROXY_TLS_WANT_WRITE;
    return r;
}

long cproxy_tls_write(void *session, const void *buffer, size_t length) {
    SSL *ssl = (SSL *)session;
    size_t n = 0;
    ERR_clear_error();
    int ret = SSL_write_ex(ssl, buffer, length, &n);
    if (ret == 1) return (long)n;
    return outcome(ssl, ret);
}

void cproxy_tls_shutdown(void *session) {
    SSL *ssl = (SSL *)session;
    struct socket_io *io = io_of(ssl);
    // A dead socket takes nothing; a client that sent nothing and left wants no goodbye.
    if (io->gone || (io->peer_fin && !io->got_data && SSL_is_server(ssl))) return;
    if (SSL_is_init_finished(ssl)) {
        ERR_clear_error();
        if (io->held_length) (void)send_held(io);
        (void)SSL_shutdown(ssl);
        ERR_clear_error();
    }
}

int cproxy_tls_established(void *session) { return SSL_is_init_finished((SSL *)session) ? 1 : 0; }

const char *cproxy_tls_protocol(void *session) {
    SSL *ssl = (SSL *)session;
    return SSL_is_init_finished(ssl) ? SSL_get_version(ssl) : "";
}

const char *cproxy_tls_cipher(void *session) {
    const char *name = SSL_get_cipher_name((SSL *)session);
    return name ? name : "";
}

const char *cproxy_tls_server_name(void *session) {
    return SSL_get_servername((SSL *)session, TLSEXT_NAMETYPE_host_name);
}

const char *cproxy_tls_alpn(void *session, unsigned int *length) {
    const unsigned char *data = NULL;
    SSL_get0_alpn_selected((SSL *)session, &data, length);
    return (const char *)data;
}

int cproxy_tls_reused(void *session) { return SSL_session_reused((SSL *)session) ? 1 : 0; }

const char *cproxy_tls_library_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

// MARK: the client side (`server ... ssl`)

/// The last session a server gave us, shared by every thread's connections to it: a new
/// connection offers it (`no-ssl-reuse` passes no slot), the server's next ticket replaces it.
struct cproxy_tls_reuse_slot { pthread_mutex_t lock; SSL_SESSION *session; };

static int slot_index = -1;

void *cproxy_tls_reuse_slot_new(void) {
    struct cproxy_tls_reuse_slot *slot = calloc(1, sizeof *slot);
    if (!slot) return NULL;
    pthread_mutex_init(&slot->lock, NULL);
    return slot;
}

void cproxy_tls_reuse_slot_free(void *p) {
    struct cproxy_tls_reuse_slot *slot = p;
    if (!slot) return;
    if (slot->session) SSL_SESSION_free(slot->session);
    pthread_mutex_destroy(&slot->lock);
    free(slot);
}

/// A session the server offered (TLS 1.3 tickets arrive after the handshake): kept for the
/// next connection when it can be resumed.
static int keep_session(SSL *ssl, SSL_SESSION *session) {
    struct cproxy_tls_reuse_slot *slot = slot_index < 0 ? NULL : SSL_get_ex_data(ssl, slot_index);
    if (!slot || !SSL_SESSION_is_resumable(session)) return 0;
    pthread_mutex_lock(&slot->lock);
    SSL_SESSION *old = slot->session;
    slot->session = session;
    pthread_mutex_unlock(&slot->lock);
    if (old) SSL_SESSION_free(old);
    return 1;   // the slot holds the reference now
}

/// Every certificate file of a directory into the context's store (files starting with a dot
/// skipped): 1 when at least one loaded.
static int load_directory(SSL_CTX *ctx, const char *path) {
    DIR *dir = opendir(path);
    if (!dir) return 0;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int loaded = 0;
    struct dirent *e;
    char file[4096];
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        if ((size_t)snprintf(file, sizeof file, "%s/%s", path, e->d_name) >= sizeof file) continue;
        if (X509_STORE_load_file(store, file) == 1) loaded = 1;
        ERR_clear_error();
    }
    closedir(dir);
    return loaded;
}

static int load_authorities(SSL_CTX *ctx, const char *ca_file, const char *crl_file, char *error, size_t error_size) {
    if (ca_file) {
        if (strcmp(ca_file, "@system-ca") == 0) {
            if (SSL_CTX_set_default_verify_paths(ctx) != 1)
                return fail(ctx, "cannot load the system's certificate authorities", ca_file, error, error_size);
        } else {
            // A PEM file of authorities, or a directory of them (HAProxy's two forms).
            struct stat st;
            if (stat(ca_file, &st) != 0) {
                snprintf(error, error_size, "cannot read the certificate authorities in '%s': %s", ca_file, strerror(errno));
                SSL_CTX_free(ctx);
                return 0;
            }
            int loaded = S_ISDIR(st.st_mode) ? load_directory(ctx, ca_file) : SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
            if (loaded != 1)
                return fail(ctx, "cannot load the certificate authorities from", ca_file, error, error_size);
        }
    }
    if (crl_file) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        if (X509_STORE_load_file(store, crl_file) != 1)
            return fail(ctx, "cannot load the revocation list from", crl_file, error, error_size);
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    }
    return 1;
}

void *cproxy_tls_client_context(const struct cproxy_tls_client_settings *s, char *error, size_t error_size) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { describe_error("cannot create a TLS context for", "server", error, error_size); return NULL; }
    if (slot_index < 0) slot_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX_set_min_proto_version(ctx, s->min_version ? s->min_version : TLS1_2_VERSION);
    if (s->max_version) SSL_CTX_set_max_proto_version(ctx, s->max_version);
    // A peer that closes without close_notify (most clients) ends the stream, not the session:
    // it stays resumable (HTTP has its own framing to detect truncation).
    long options = SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (s->no_tickets) options |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, options);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    // Whole socket reads into OpenSSL's buffer, not a header then a body per record.
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
    if (s->ciphers && SSL_CTX_set_cipher_list(ctx, s->ciphers) != 1)
        return fail(ctx, "no cipher of", s->ciphers, error, error_size), NULL;
    if (s->ciphersuites && SSL_CTX_set_ciphersuites(ctx, s->ciphersuites) != 1)
        return fail(ctx, "no TLS 1.3 cipher suite of", s->ciphersuites, error, error_size), NULL;
    if (s->curves && SSL_CTX_set1_groups_list(ctx, s->curves) != 1)
        return fail(ctx, "unknown curves in", s->curves, error, error_size), NULL;
    if (s->alpn && s->alpn_length > 0 && SSL_CTX_set_alpn_protos(ctx, s->alpn, (unsigned int)s->alpn_length) != 0)
        return fail(ctx, "cannot offer the ALPN list of", "server", error, error_size), NULL;
    if (!load_authorities(ctx, s->ca_file, s->crl_file, error, error_size)) return NULL;
    SSL_CTX_set_verify(ctx, s->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (s->certificate) {
        if (SSL_CTX_use_certificate_chain_file(ctx, s->certificate) != 1)
            return fail(ctx, "cannot load the certificate chain from", s->certificate, error, error_size), NULL;
        if (SSL_CTX_use_PrivateKey_file(ctx, s->certificate, SSL_FILETYPE_PEM) != 1)
            return fail(ctx, "cannot load the private key from", s->certificate, error, error_size), NULL;
        if (SSL_CTX_check_private_key(ctx) != 1)
            return fail(ctx, "the private key does not match the certificate in", s->certificate, error, error_size), NULL;
    }
    return ctx;
}

void *cproxy_tls_connect(void *context, int fd, const char *server_name, const char *verify_host, void *reuse) {
    SSL *ssl = SSL_new((SSL_CTX *)context);
    if (!ssl) { ERR_clear_error(); return NULL; }
    if (!attach_socket(ssl, fd)) { SSL_free(ssl); ERR_clear_error(); return NULL; }
    if (server_name && *server_name) SSL_set_tlsext_host_name(ssl, server_name);
    // The certificate must name the SNI sent, else `verifyhost` (with `verify required`).
    const char *host = (server_name && *server_name) ? server_name : verify_host;
    if (host && *host && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE) SSL_set1_host(ssl, host);
    struct cproxy_tls_reuse_slot *slot = reuse;
    if (slot) {
        SSL_set_ex_data(ssl, slot_index, slot);
        pthread_mutex_lock(&slot->lock);
        // A session resumes only under the name it was made for (a resumed session keeps
        // its original SNI on the server's side).
        if (slot->session) {
            const char *was = SSL_SESSION_get0_hostname(slot->session);
            int same = (!was && !(server_name && *server_name)) || (was && server_name && strcasecmp(was, server_name) == 0);
            if (same) SSL_set_session(ssl, slot->session);
        }
        pthread_mutex_unlock(&slot->lock);
    }
    SSL_set_connect_state(ssl);
    ERR_clear_error();
    return ssl;
}

long cproxy_tls_handshake(void *session) {
    SSL *ssl = (SSL *)session;
    struct socket_io *io = io_of(ssl);
    ERR_clear_error();
    if (io->held_length && send_held(io) == 0) return CPROXY_TLS_WANT_WRITE;
    begin_holding(io);
    int ret = SSL_do_handshake(ssl);
    if (ret == 1) { release_held(ssl, io, 0); return io->held_length ? CPROXY_TLS_WANT_WRITE : 1; }
    long r = outcome(ssl, ret);
    release_held(ssl, io, r == CPROXY_TLS_CLOSED || r == CPROXY_TLS_ERROR);
    if (r == CPROXY_TLS_WANT_READ && io->held_length) return CPROXY_TLS_WANT_WRITE;
    return r;
}

const char *cproxy_tls_verify_error(void *session) {
    long result = SSL_get_verify_result((SSL *)session);
    return result == X509_V_OK ? NULL : X509_verify_cert_error_string(result);
}

// MARK: resumption that survives a reload

/// The ticket keys every server context encrypts and decrypts tickets with: the newest
/// encrypts, the others still decrypt (a ticket stays valid across one or two rotations).
/// Process-wide, under a lock (handshakes on any thread); carried to the next process.
struct ticket_key { unsigned char name[16], aes[32], hmac[32]; long long born; };
enum { TICKET_KEYS = 3 };
static struct {
    pthread_mutex_t lock;
    struct ticket_key keys[TICKET_KEYS];   // keys[0] is the newest
    int count;
    long lifetime;                         // rotation period, seconds (`tune.ssl.lifetime`)
} tickets = { PTHREAD_MUTEX_INITIALIZER, {{{0}}}, 0, 300 };

static long long now_seconds(void) { return (long long)time(NULL); }

/// A new newest key; the oldest falls off. Called with the lock held.
static int rotate_locked(long long now) {
    struct ticket_key k;
    if (RAND_bytes(k.name, sizeof k.name) != 1 || RAND_bytes(k.aes, sizeof k.aes) != 1 || RAND_bytes(k.hmac, sizeof k.hmac) != 1) return 0;
    k.born = now;
    memmove(&tickets.keys[1], &tickets.keys[0], (TICKET_KEYS - 1) * sizeof k);
    tickets.keys[0] = k;
    if (tickets.count < TICKET_KEYS) tickets.count++;
    return 1;
}

/// AES-256-CBC, fetched from the provider once (a fetch by name per ticket costs lookups).
static EVP_CIPHER *ticket_cipher;
static pthread_once_t ticket_cipher_once = PTHREAD_ONCE_INIT;
static void fetch_ticket_cipher(void) { ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL); }

/// `tls-ticket-keys FILE`: a bind line's own keys, fixed (the file is rotated by the
/// operator): the last three of the file, the penultimate one encrypting.
struct file_keys { int count; int aes256; struct ticket_key keys[TICKET_KEYS]; int encrypting; };
static int file_keys_index = -1;

static int file_ticket_callback(struct file_keys *f, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int encrypt) {
    int found = f->encrypting;
    if (!encrypt) {
        found = -1;
        for (int i = 0; i < f->count; i++) if (memcmp(name, f->keys[i].name, 16) == 0) { found = i; break; }
        if (found < 0) return 0;
    }
    struct ticket_key *k = &f->keys[found];
    size_t key_length = f->aes256 ? 32 : 16;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->hmac, key_length),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "sha256", 0),
        OSSL_PARAM_construct_end()
    };
    const EVP_CIPHER *aes = f->aes256 ? EVP_aes_256_cbc() : EVP_aes_128_cbc();
    if (encrypt) {
        memcpy(name, k->name, 16);
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
        if (EVP_EncryptInit_ex(cipher, aes, NULL, k->aes, iv) != 1 || EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
        return 1;
    }
    if (EVP_DecryptInit_ex(cipher, aes, NULL, k->aes, iv) != 1 || EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
    return found == f->encrypting ? 1 : 2;
}

int cproxy_tls_set_ticket_keys(void *context, const unsigned char *keys, size_t key_length, int count) {
    if ((key_length != 48 && key_length != 80) || count < 1 || count > TICKET_KEYS) return 0;
    if (file_keys_index < 0) file_keys_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    struct file_keys *f = calloc(1, sizeof *f);
    if (!f) return 0;
    f->count = count;
    f->aes256 = key_length == 80;
    size_t half = (key_length - 16) / 2;
    for (int i = 0; i < count; i++) {
        const unsigned char *p = keys + key_length * (size_t)i;
        memcpy(f->keys[i].name, p, 16);
        memcpy(f->keys[i].aes, p + 16, half);
        memcpy(f->keys[i].hmac, p + 16 + half, half);
    }
    f->encrypting = count >= 2 ? count - 2 : 0;
    SSL_CTX *ctx = (SSL_CTX *)context;
    free(SSL_CTX_get_ex_data(ctx, file_keys_index));
    SSL_CTX_set_ex_data(ctx, file_keys_index, f);
    return 1;
}

static int ticket_callback(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int encrypt) {
    if (file_keys_index >= 0) {
        struct file_keys *f = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), file_keys_index);
        if (f) return file_ticket_callback(f, name, iv, cipher, mac, encrypt);
    }
    struct ticket_key k;
    int renew = 0;
    pthread_mutex_lock(&tickets.lock);
    long long now = now_seconds();
    if (tickets.count == 0 || now - tickets.keys[0].born >= tickets.lifetime) rotate_locked(now);
    if (encrypt) {
        if (tickets.count == 0) { pthread_mutex_unlock(&tickets.lock); return -1; }
        k = tickets.keys[0];
    } else {
        int found = -1;
        for (int i = 0; i < tickets.count; i++) if (memcmp(name, tickets.keys[i].name, 16) == 0) { found = i; break; }
        if (found < 0) { pthread_mutex_unlock(&tickets.lock); return 0; }   // unknown: a full handshake
        k = tickets.keys[found];
        renew = found > 0;
    }
    pthread_mutex_unlock(&tickets.lock);
    pthread_once(&ticket_cipher_once, fetch_ticket_cipher);
    const EVP_CIPHER *aes = ticket_cipher ? ticket_cipher : EVP_aes_256_cbc();
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "sha256", 0),
        OSSL_PARAM_construct_end()
    };
    if (encrypt) {
        memcpy(name, k.name, 16);
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
        if (EVP_EncryptInit_ex(cipher, aes, NULL, k.aes, iv) != 1) return -1;
        if (EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
        return 1;
    }
    if (EVP_DecryptInit_ex(cipher, aes, NULL, k.aes, iv) != 1) return -1;
    if (EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
    return renew ? 2 : 1;   // 2: valid, but a ticket under the newest key is issued
}

/// The session-ID cache (TLS 1.2 session IDs, TLS 1.3 stateful tickets with
/// `no-tls-tickets`), shared by every thread and context: entries are kept serialised, so
/// they can be handed to the next process as they are. Bounded (`tune.ssl.cachesize`),
/// the least recently added leaving first.
struct cached_session {
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    unsigned int id_length;
    unsigned char *der;
    int der_length;
    struct cached_session *next_in_bucket, *newer, *older;
};
enum { BUCKETS = 4096 };
static struct {
    pthread_mutex_t lock;
    struct cached_session *buckets[BUCKETS];
    struct cached_session *newest, *oldest;
    long count, capacity;
} cache = { PTHREAD_MUTEX_INITIALIZER, {0}, NULL, NULL, 0, 20000 };

static unsigned bucket_of(const unsigned char *id, unsigned length) {
    unsigned h = 2166136261u;
    for (unsigned i = 0; i < length; i++) h = (h ^ id[i]) * 16777619u;
    return h % BUCKETS;
}

static struct cached_session **find_locked(const unsigned char *id, unsigned length) {
    struct cached_session **p = &cache.buckets[bucket_of(id, length)];
    while (*p && !((*p)->id_length == length && memcmp((*p)->id, id, length) == 0)) p = &(*p)->next_in_bucket;
    return p;
}

static void unlink_locked(struct cached_session **slot) {
    struct cached_session *e = *slot;
    *slot = e->next_in_bucket;
    if (e->newer) e->newer->older = e->older; else cache.newest = e->older;
    if (e->older) e->older->newer = e->newer; else cache.oldest = e->newer;
    cache.count--;
    OPENSSL_free(e->der);
    free(e);
}

/// Adds a serialised session (the DER takes ownership of `der`); 0 when out of memory.
static int insert_locked(const unsigned char *id, unsigned length, unsigned char *der, int der_length) {
    if (length == 0 || length > SSL_MAX_SSL_SESSION_ID_LENGTH || cache.capacity <= 0) { OPENSSL_free(der); return 0; }
    struct cached_session **existing = find_locked(id, length);
    if (*existing) unlink_locked(existing);
    while (cache.count >= cache.capacity && cache.oldest)
        unlink_locked(find_locked(cache.oldest->id, cache.oldest->id_length));
    struct cached_session *e = calloc(1, sizeof *e);
    if (!e) { OPENSSL_free(der); return 0; }
    memcpy(e->id, id, length);
    e->id_length = length;
    e->der = der;
    e->der_length = der_length;
    unsigned b = bucket_of(id, length);
    e->next_in_bucket = cache.buckets[b];
    cache.buckets[b] = e;
    e->older = cache.newest;
    if (cache.newest) cache.newest->newer = e; else cache.oldest = e;
    cache.newest = e;
    cache.count++;
    return 1;
}

static int cache_new(SSL *ssl, SSL_SESSION *session) {
    // A TLS 1.3 session sent as a stateless ticket resumes by decrypting it: nothing to keep.
    if (SSL_version(ssl) == TLS1_3_VERSION && !(SSL_get_options(ssl) & SSL_OP_NO_TICKET)) return 0;
    unsigned int length = 0;
    const unsigned char *id = SSL_SESSION_get_id(session, &length);
    unsigned char *der = NULL;
    int n = i2d_SSL_SESSION(session, &der);
    if (n <= 0) { ERR_clear_error(); return 0; }
    pthread_mutex_lock(&cache.lock);
    insert_locked(id, length, der, n);
    pthread_mutex_unlock(&cache.lock);
    return 0;   // OpenSSL keeps its reference: we hold a copy
}

static SSL_SESSION *cache_get(SSL *ssl, const unsigned char *id, int length, int *copy) {
    (void)ssl;
    *copy = 0;
    SSL_SESSION *session = NULL;
    pthread_mutex_lock(&cache.lock);
    struct cached_session **found = length > 0 ? find_locked(id, (unsigned)length) : NULL;
    if (found && *found) {
        const unsigned char *p = (*found)->der;
        session = d2i_SSL_SESSION(NULL, &p, (*found)->der_length);
    }
    pthread_mutex_unlock(&cache.lock);
    if (!session) ERR_clear_error();
    return session;
}

static void cache_remove(SSL_CTX *ctx, SSL_SESSION *session) {
    (void)ctx;
    unsigned int length = 0;
    const unsigned char *id = SSL_SESSION_get_id(session, &length);
    pthread_mutex_lock(&cache.lock);
    struct cached_session **found = find_locked(id, length);
    if (*found) unlink_locked(found);
    pthread_mutex_unlock(&cache.lock);
}

void cproxy_tls_configure_resumption(long cache_size, long lifetime) {
    pthread_mutex_lock(&cache.lock);
    cache.capacity = cache_size;
    while (cache.count > cache.capacity && cache.oldest) unlink_locked(find_locked(cache.oldest->id, cache.oldest->id_length));
    pthread_mutex_unlock(&cache.lock);
    pthread_mutex_lock(&tickets.lock);
    tickets.lifetime = lifetime > 0 ? lifetime : 300;
    pthread_mutex_unlock(&tickets.lock);
}

/// Resumption on a server context: our ticket keys, the shared cache, sessions valid for
/// `tune.ssl.lifetime`, and an ID context (`bind` line) outside which they do not resume.
static void enable_resumption(SSL_CTX *ctx, const char *session_context) {
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL | SSL_SESS_CACHE_NO_AUTO_CLEAR);
    SSL_CTX_sess_set_new_cb(ctx, cache_new);
    SSL_CTX_sess_set_get_cb(ctx, cache_get);
    SSL_CTX_sess_set_remove_cb(ctx, cache_remove);
    pthread_mutex_lock(&tickets.lock);
    long lifetime = tickets.lifetime;
    pthread_mutex_unlock(&tickets.lock);
    SSL_CTX_set_timeout(ctx, lifetime);
    if (session_context) {
        unsigned char digest[32];
        unsigned int n = 0;
        EVP_Digest(session_context, strlen(session_context), digest, &n, EVP_sha256(), NULL);
        SSL_CTX_set_session_id_context(ctx, digest, n > SSL_MAX_SID_CTX_LENGTH ? SSL_MAX_SID_CTX_LENGTH : n);
    }
}

size_t cproxy_tls_export_ticket_keys(unsigned char *out, size_t size) {
    size_t used = 0;
    pthread_mutex_lock(&tickets.lock);
    for (int i = 0; i < tickets.count && used + 88 <= size; i++) {
        struct ticket_key *k = &tickets.keys[i];
        memcpy(out + used, k->name, 16); memcpy(out + used + 16, k->aes, 32); memcpy(out + used + 48, k->hmac, 32);
        for (int b = 0; b < 8; b++) out[used + 80 + b] = (unsigned char)((unsigned long long)k->born >> (56 - 8 * b));
        used += 88;
    }
    pthread_mutex_unlock(&tickets.lock);
    return used;
}

int cproxy_tls_import_ticket_keys(const unsigned char *in, size_t size) {
    if (size == 0 || size % 88 != 0 || size / 88 > TICKET_KEYS) return 0;
    pthread_mutex_lock(&tickets.lock);
    tickets.count = (int)(size / 88);
    for (int i = 0; i < tickets.count; i++) {
        struct ticket_key *k = &tickets.keys[i];
        const unsigned char *p = in + 88 * i;
        memcpy(k->name, p, 16); memcpy(k->aes, p + 16, 32); memcpy(k->hmac, p + 48, 32);
        unsigned long long born = 0;
        for (int b = 0; b < 8; b++) born = (born << 8) | p[80 + b];
        k->born = (long long)born;
    }
    pthread_mutex_unlock(&tickets.lock);
    return 1;
}

size_t cproxy_tls_export_sessions(unsigned char *out, size_t size, long *count) {
    size_t used = 0;
    *count = 0;
    pthread_mutex_lock(&cache.lock);
    for (struct cached_session *e = cache.newest; e; e = e->older) {
        size_t need = 1 + e->id_length + 4 + (size_t)e->der_length;
        if (used + need > size) break;
        out[used] = (unsigned char)e->id_length;
        memcpy(out + used + 1, e->id, e->id_length);
        unsigned char *p = out + used + 1 + e->id_length;
        p[0] = (unsigned char)(e->der_length >> 24); p[1] = (unsigned char)(e->der_length >> 16);
        p[2] = (unsigned char)(e->der_length >> 8); p[3] = (unsigned char)e->der_length;
        memcpy(p + 4, e->der, (size_t)e->der_length);
        used += need;
        (*count)++;
    }
    pthread_mutex_unlock(&cache.lock);
    return used;
}

long cproxy_tls_import_sessions(const unsigned char *in, size_t size) {
    // Newest first in the blob: inserted oldest first, so the order survives.
    size_t capacity = 1024, *offsets = malloc(capacity * sizeof *offsets);
    if (!offsets) return -1;
    long n = 0;
    size_t at = 0;
    while (at < size) {
        unsigned id_length = in[at];
        if (id_length == 0 || id_length > SSL_MAX_SSL_SESSION_ID_LENGTH || at + 1 + id_length + 4 > size) { free(offsets); return -1; }
        const unsigned char *p = in + at + 1 + id_length;
        size_t der_length = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
        if (der_length == 0 || der_length > (1 << 20) || at + 1 + id_length + 4 + der_length > size) { free(offsets); return -1; }
        if ((size_t)n == capacity) {
            size_t *grown = realloc(offsets, 2 * capacity * sizeof *offsets);
            if (!grown) { free(offsets); return -1; }
            offsets = grown;
            capacity *= 2;
        }
        offsets[n++] = at;
        at += 1 + id_length + 4 + der_length;
    }
    long imported = 0;
    pthread_mutex_lock(&cache.lock);
    for (long i = n - 1; i >= 0; i--) {
        const unsigned char *e = in + offsets[i];
        unsigned id_length = e[0];
        const unsigned char *p = e + 1 + id_length;
        int der_length = (int)(((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3]);
        unsigned char *der = OPENSSL_malloc((size_t)der_length);
        if (!der) break;
        memcpy(der, p + 4, (size_t)der_length);
        if (insert_locked(e + 1, id_length, der, der_length)) imported++;
    }
    pthread_mutex_unlock(&cache.lock);
    free(offsets);
    return imported;
}

int cproxy_tls_peer_certificate(void *session, int *this_handshake) {
    SSL *ssl = (SSL *)session;
    int has = SSL_get0_peer_certificate(ssl) != NULL;
    *this_handshake = has && !SSL_session_reused(ssl);
    return has;
}

long cproxy_tls_peer_verify_result(void *session) { return SSL_get_verify_result((SSL *)session); }

char *cproxy_tls_peer_name(void *session, int issuer) {
    X509 *cert = SSL_get0_peer_certificate((SSL *)session);
    if (!cert) return NULL;
    return X509_NAME_oneline(issuer ? X509_get_issuer_name(cert) : X509_get_subject_name(cert), NULL, 0);
}

int cproxy_tls_peer_serial(void *session, unsigned char *out, int size) {
    X509 *cert = SSL_get0_peer_certificate((SSL *)session);
    if (!cert) return 0;
    const ASN1_INTEGER *serial = X509_get0_serialNumber(cert);
    int n = ASN1_STRING_length(serial);
    if (n > size) return -1;
    memcpy(out, ASN1_STRING_get0_data(serial), (size_t)n);
    return n;
}

void cproxy_tls_free_text(char *text) { OPENSSL_free(text); }

int cproxy_tls_peer_common_name(void *session, char *out, int size) {
    X509 *cert = SSL_get0_peer_certificate((SSL *)session);
    if (!cert || size <= 0) return 0;
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, out, size);
    return n > 0 && n < size ? n : 0;
}

int cproxy_tls_peer_sent_bytes(void *session) { return io_of((SSL *)session)->got_bytes; }

long cproxy_tls_cached_sessions(void) {
    pthread_mutex_lock(&cache.lock);
    long n = cache.count;
    pthread_mutex_unlock(&cache.lock);
    return n;
}

void cproxy_tls_set_alpn(void *session, const unsigned char *alpn, size_t length) {
    SSL_set_alpn_protos((SSL *)session, alpn, (unsigned int)length);
}

// ---------------------------------------------------------------------------------------
// `show ssl cert FILE`

struct text { char *at; size_t left; };

static void put(struct text *t, const char *format, ...) {
    if (t->left == 0) return;
    va_list a;
    va_start(a, format);
    int n = vsnprintf(t->at, t->left, format, a);
    va_end(a);
    if (n < 0) return;
    size_t used = (size_t)n < t->left ? (size_t)n : t->left - 1;
    t->at += used;
    t->left -= used;
}

static void put_hex(struct text *t, const unsigned char *bytes, size_t length) {
    for (size_t i = 0; i < length; i++) put(t, "%02X", bytes[i]);
}

static void put_time(struct text *t, const char *label, const ASN1_TIME *when) {
    char buffer[64] = "";
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio) {
        ASN1_TIME_print(bio, when);
        int n = BIO_read(bio, buffer, (int)sizeof buffer - 1);
        buffer[n > 0 ? n : 0] = 0;
        BIO_free(bio);
    }
    put(t, "%s: %s\n", label, buffer);
}

static void put_name(struct text *t, const char *label, const X509_NAME *name) {
    char *line = X509_NAME_oneline(name, NULL, 0);
    put(t, "%s: %s\n", label, line ? line : "");
    OPENSSL_free(line);
}

int cproxy_tls_describe_pem(const void *pem_bytes, size_t pem_length, char *out, size_t out_size, int *has_key) {
    if (out_size == 0 || pem_length > INT_MAX) return 0;
    out[0] = 0;
    *has_key = 0;
    BIO *bio = BIO_new_mem_buf(pem_bytes, (int)pem_length);
    if (!bio) return 0;
    X509 *cert = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    if (!cert) { BIO_free(bio); ERR_clear_error(); return 0; }
    struct text t = { out, out_size };
    const ASN1_INTEGER *serial = X509_get0_serialNumber(cert);
    put(&t, "Serial: ");
    put_hex(&t, ASN1_STRING_get0_data(serial), (size_t)ASN1_STRING_length(serial));
    put(&t, "\n");
    put_time(&t, "notBefore", X509_get0_notBefore(cert));
    put_time(&t, "notAfter", X509_get0_notAfter(cert));
    put(&t, "Subject Alternative Name: ");
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    // DNS names only, each but the last name of any kind followed by ", " (as HAProxy prints).
    int count = names ? sk_GENERAL_NAME_num(names) : 0;
    for (int i = 0; i < count; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_DNS)
            put(&t, "DNS:%.*s", ASN1_STRING_length(g->d.dNSName), (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        if (i < count - 1) put(&t, ", ");
    }
    GENERAL_NAMES_free(names);
    put(&t, "\n");
    EVP_PKEY *public_key = X509_get0_pubkey(cert);
    int bits = public_key ? EVP_PKEY_get_bits(public_key) : 0;
    switch (public_key ? EVP_PKEY_get_base_id(public_key) : 0) {
    case EVP_PKEY_RSA: put(&t, "Algorithm: RSA%d\n", bits); break;
    case EVP_PKEY_EC: put(&t, "Algorithm: EC%d\n", bits); break;
    case EVP_PKEY_DSA: put(&t, "Algorithm: DSA%d\n", bits); break;
    default: put(&t, "Algorithm: Unknown\n"); break;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_length = 0;
    put(&t, "SHA1 FingerPrint: ");
    if (X509_digest(cert, EVP_sha1(), digest, &digest_length) == 1) put_hex(&t, digest, digest_length);
    put(&t, "\n");
    put_name(&t, "Subject", X509_get_subject_name(cert));
    put_name(&t, "Issuer", X509_get_issuer_name(cert));
    X509 *chain;
    while ((chain = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        put_name(&t, "Chain Subject", X509_get_subject_name(chain));
        put_name(&t, "Chain Issuer", X509_get_issuer_name(chain));
        X509_free(chain);
    }
    BIO_free(bio);
    bio = BIO_new_mem_buf(pem_bytes, (int)pem_length);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (key) *has_key = X509_check_private_key(cert, key) == 1 ? 1 : -1;
    EVP_PKEY_free(key);
    X509_free(cert);
    ERR_clear_error();
    return 1;
}
