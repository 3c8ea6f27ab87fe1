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
#include <errno.h>

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

void *cproxy_tls_server_context(const char *pem, const struct cproxy_tls_settings *s, char *error, size_t error_size) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { describe_error("cannot create a TLS context for", pem, error, error_size); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, s && s->min_version ? s->min_version : TLS1_2_VERSION);
    if (s && s->max_version) SSL_CTX_set_max_proto_version(ctx, s->max_version);
    long options = SSL_OP_NO_RENEGOTIATION;
    if (!(s && s->prefer_client_ciphers)) options |= SSL_OP_CIPHER_SERVER_PREFERENCE;
    if (s && s->no_tickets) options |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, options);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
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
    if (SSL_CTX_use_certificate_chain_file(ctx, pem) != 1)
        return fail(ctx, "cannot load the certificate chain from", pem, error, error_size), NULL;
    if (SSL_CTX_use_PrivateKey_file(ctx, pem, SSL_FILETYPE_PEM) != 1)
        return fail(ctx, "cannot load the private key from", pem, error, error_size), NULL;
    if (SSL_CTX_check_private_key(ctx) != 1)
        return fail(ctx, "the private key does not match the certificate in", pem, error, error_size), NULL;
    return ctx;
}

/// The certificates SNI chooses among, kept on the first context (ex_data slot 1).
struct sni_entry { char *name; SSL_CTX *ctx; };
struct sni_table { struct sni_entry *entries; size_t count; SSL_CTX **owned; size_t owned_count; int strict; };

static int sni_index = -1;

static struct sni_table *table_of(SSL_CTX *ctx) {
    return sni_index < 0 ? NULL : (struct sni_table *)SSL_CTX_get_ex_data(ctx, sni_index);
}

static SSL_CTX *lookup(struct sni_table *t, const char *name) {
    for (size_t i = 0; i < t->count; i++)
        if (strcasecmp(t->entries[i].name, name) == 0) return t->entries[i].ctx;
    const char *dot = strchr(name, '.');
    if (!dot) return NULL;
    for (size_t i = 0; i < t->count; i++) {
        const char *n = t->entries[i].name;
        if (n[0] == '*' && n[1] == '.' && strcasecmp(n + 1, dot) == 0) return t->entries[i].ctx;
    }
    return NULL;
}

static int choose_certificate(SSL *ssl, int *alert, void *arg) {
    struct sni_table *t = (struct sni_table *)arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    SSL_CTX *chosen = (name && t) ? lookup(t, name) : NULL;
    if (chosen) {
        SSL_set_SSL_CTX(ssl, chosen);
        return SSL_TLSEXT_ERR_OK;
    }
    if (t && t->strict) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

void cproxy_tls_context_free(void *context);

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
    SSL_CTX_set_tlsext_servername_callback(ctx, choose_certificate);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
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

int cproxy_tls_add_sni(void *context, void *other) {
    SSL_CTX *ctx = (SSL_CTX *)context, *add = (SSL_CTX *)other;
    struct sni_table *t = table_for(ctx);
    if (!t) { cproxy_tls_context_free(add); return 0; }
    SSL_CTX **owned = realloc(t->owned, (t->owned_count + 1) * sizeof *owned);
    if (!owned) { cproxy_tls_context_free(add); return 0; }
    t->owned = owned;
    t->owned[t->owned_count++] = add;
    return add_names(t, add);
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

void *cproxy_tls_accept(void *context, int fd) {
    SSL *ssl = SSL_new((SSL_CTX *)context);
    if (!ssl) { ERR_clear_error(); return NULL; }
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); ERR_clear_error(); return NULL; }
    SSL_set_accept_state(ssl);
    return ssl;
}

void cproxy_tls_free(void *session) { SSL_free((SSL *)session); }

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
    size_t n = 0;
    ERR_clear_error();
    int ret = SSL_read_ex(ssl, buffer, length, &n);
    if (ret == 1) return (long)n;
    return outcome(ssl, ret);
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
    if (SSL_is_init_finished(ssl)) {
        ERR_clear_error();
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
    long options = SSL_OP_NO_RENEGOTIATION;
    if (s->no_tickets) options |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, options);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
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
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); ERR_clear_error(); return NULL; }
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
    ERR_clear_error();
    int ret = SSL_do_handshake(ssl);
    if (ret == 1) return 1;
    return outcome(ssl, ret);
}

const char *cproxy_tls_verify_error(void *session) {
    long result = SSL_get_verify_result((SSL *)session);
    return result == X509_V_OK ? NULL : X509_verify_cert_error_string(result);
}
