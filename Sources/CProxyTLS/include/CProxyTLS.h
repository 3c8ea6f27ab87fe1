// TLS on non-blocking sockets through the system's OpenSSL 3: the few calls the engine
// needs, with OpenSSL's macros and error queue kept on this side. Handles are opaque.
#ifndef CPROXY_TLS_H
#define CPROXY_TLS_H
#include <stddef.h>

/// What a read or write returns when it moved no byte.
enum {
    CPROXY_TLS_WANT_READ = -1,   // waits for the socket to be readable
    CPROXY_TLS_WANT_WRITE = -2,  // waits for the socket to be writable
    CPROXY_TLS_CLOSED = -3,      // the peer's close_notify, or its FIN
    CPROXY_TLS_ERROR = -4        // a protocol or socket error: the connection is over
};

/// How a server context negotiates (`bind` options over `ssl-default-bind-*`); NULL or 0
/// leaves OpenSSL's default.
struct cproxy_tls_settings {
    const char *ciphers;        // TLS 1.2 and below (`ciphers`)
    const char *ciphersuites;   // TLS 1.3 (`ciphersuites`)
    const char *curves;         // `curves` (groups)
    int min_version;            // e.g. 0x0303 for TLS 1.2 (TLS1_2_VERSION); 0: TLS 1.2
    int max_version;            // 0: the highest
    int no_tickets;             // `no-tls-tickets`
    int prefer_client_ciphers;  // `prefer-client-ciphers`
    const unsigned char *alpn;  // the protocols offered, in ALPN wire format; NULL: no ALPN
    size_t alpn_length;
    const char *session_context; // sessions resume only on the line that made them (its address)
    int verify;                 // client certificates: 0 none, 1 optional, 2 required
    const char *ca_file;        // the authorities client certificates are verified with
    const char *crl_file;       // revocation lists checked with them
};

/// A server context from PEM files (certificate, chain and key in one file, as HAProxy's
/// `crt`); NULL with a message in `error` when a file is missing, unreadable, or its key
/// does not match its certificate, or a setting is refused by OpenSSL.
/// A server context from a PEM file's bytes (`pem` names it in errors).
void *cproxy_tls_server_context(const char *pem, const void *pem_bytes, size_t pem_length,
                                const struct cproxy_tls_settings *settings, char *error, size_t error_size);
/// What `show ssl cert FILE` prints of a PEM file's bytes (certificate, key, chain), in
/// HAProxy's lines; 0 when it holds no certificate. `has_key` tells whether a key is there
/// and matches.
int cproxy_tls_describe_pem(const void *pem_bytes, size_t pem_length, char *out, size_t out_size, int *has_key);
void cproxy_tls_context_free(void *context);

/// Adds `other` (a context made like the first) as a certificate chosen by SNI: the client's
/// server name is matched against each added certificate's DNS names (subjectAltName, else
/// its CN), exactly, then by a `*.` wildcard one label deep; no match keeps the first
/// context's certificate. `context` takes ownership of `other`. 0 when `other` has no name.
int cproxy_tls_add_sni(void *context, void *other);

/// As cproxy_tls_add_sni, chosen by the given names (a `crt-list` line's SNI filters,
/// `*.` wildcards one label deep) instead of the certificate's own. 0 when out of memory.
int cproxy_tls_add_sni_named(void *context, void *other, const char *const *names, int count);

/// `strict-sni`: a client whose server name matches no certificate (or that sends none) is
/// refused with the `unrecognized_name` alert instead of getting the default certificate.
/// 0 when the first certificate names no host.
int cproxy_tls_set_strict_sni(void *context);

/// 1 when the context's certificate has expired (its notAfter, as text, in `when`), else 0.
int cproxy_tls_expired(void *context, char *when, size_t when_size);

/// A server-side session on a connected non-blocking socket; NULL when out of memory.
void *cproxy_tls_accept(void *context, int fd);
void cproxy_tls_free(void *session);

/// Reads decrypted bytes (the handshake first, when not done): the count, or one of the
/// codes above.
long cproxy_tls_read(void *session, void *buffer, size_t length);
/// Writes bytes to encrypt: the count taken (possibly fewer), or one of the codes above.
long cproxy_tls_write(void *session, const void *buffer, size_t length);
/// Sends close_notify if the handshake finished; never waits.
void cproxy_tls_shutdown(void *session);

/// 1 once the handshake is complete.
int cproxy_tls_established(void *session);
/// The negotiated protocol ("TLSv1.3") and cipher, or "" before the handshake.
const char *cproxy_tls_protocol(void *session);
const char *cproxy_tls_cipher(void *session);
/// The server name the client asked for (SNI), or NULL.
const char *cproxy_tls_server_name(void *session);
/// The protocol ALPN chose, or NULL.
const char *cproxy_tls_alpn(void *session, unsigned int *length);
/// 1 when the session was resumed.
int cproxy_tls_reused(void *session);
/// How a client context (`server ... ssl`) connects: the settings of the server line over
/// `ssl-default-server-*`; NULL or 0 leaves OpenSSL's default.
struct cproxy_tls_client_settings {
    const char *ciphers;
    const char *ciphersuites;
    const char *curves;
    int min_version;
    int max_version;
    int no_tickets;
    int verify;                 // 1: the server's certificate must verify (`verify required`)
    const char *ca_file;        // a PEM file or directory of authorities, or "@system-ca"
    const char *crl_file;       // revocation lists checked with the authorities
    const char *certificate;    // our client certificate, chain and key in one PEM file
    const unsigned char *alpn;  // offered, in ALPN wire format
    size_t alpn_length;
};

/// A client context; NULL with a message in `error` when a file cannot be loaded.
void *cproxy_tls_client_context(const struct cproxy_tls_client_settings *settings, char *error, size_t error_size);
/// A server's last resumable session, shared by the threads (thread-safe).
void *cproxy_tls_reuse_slot_new(void);
void cproxy_tls_reuse_slot_free(void *slot);
/// A client-side session on a connecting non-blocking socket: `server_name` is sent as SNI,
/// and the certificate must name it (else `verify_host`) when the context verifies; `reuse`
/// (or NULL) offers the server's last session and keeps its next one. NULL when out of memory.
void *cproxy_tls_connect(void *context, int fd, const char *server_name, const char *verify_host, void *reuse);
/// Offers `alpn` (wire format) on this client session instead of the context's list.
void cproxy_tls_set_alpn(void *session, const unsigned char *alpn, size_t length);
/// Drives the handshake: 1 when complete, or one of the codes above.
long cproxy_tls_handshake(void *session);
/// Why the peer's certificate did not verify, or NULL.
const char *cproxy_tls_verify_error(void *session);

/// Resumption that survives a reload: one session cache for the process (`cache_size`
/// entries, `tune.ssl.cachesize`) and ticket keys rotated every `lifetime` seconds
/// (`tune.ssl.lifetime`, also how long a session is valid). Call before making contexts.
void cproxy_tls_configure_resumption(long cache_size, long lifetime);
/// `tls-ticket-keys FILE` on a server context: `count` keys of `key_length` bytes (48: AES-128,
/// 80: AES-256; name, AES key, HMAC key), the file's last ones; the penultimate encrypts. 0
/// when malformed.
int cproxy_tls_set_ticket_keys(void *context, const unsigned char *keys, size_t key_length, int count);
/// The ticket keys, newest first, 88 bytes each (name, AES key, HMAC key, birth in seconds
/// big-endian): the bytes written. Import replaces this process's keys; 0 when malformed.
size_t cproxy_tls_export_ticket_keys(unsigned char *out, size_t size);
int cproxy_tls_import_ticket_keys(const unsigned char *in, size_t size);
/// The cached sessions, newest first, as many as fit in `size` bytes (`count` says how
/// many); import adds them (oldest first) and returns how many, or -1 when malformed.
size_t cproxy_tls_export_sessions(unsigned char *out, size_t size, long *count);
long cproxy_tls_import_sessions(const unsigned char *in, size_t size);
/// How many sessions the cache holds.
long cproxy_tls_cached_sessions(void);

/// The client's certificate: 1 when one was sent (in this handshake, or the resumed
/// session's), and whether it came in this very handshake.
int cproxy_tls_peer_certificate(void *session, int *this_handshake);
/// OpenSSL's verification result for the peer's certificate (0: verified).
long cproxy_tls_peer_verify_result(void *session);
/// The subject (`issuer` 0) or issuer (1) of the peer's certificate as `/C=../CN=..`, in
/// memory the caller frees with cproxy_tls_free_text; NULL without a certificate.
char *cproxy_tls_peer_name(void *session, int issuer);
/// The serial number's bytes into `out` (at most `size`): the count, 0 without one, -1 when
/// it does not fit.
int cproxy_tls_peer_serial(void *session, unsigned char *out, int size);
void cproxy_tls_free_text(char *text);
/// The client certificate's CN into `out` (NUL-terminated): its length, 0 if none.
int cproxy_tls_peer_common_name(void *session, char *out, int size);

/// 1 once the peer sent any byte (a connection closed before its ClientHello is no failed
/// handshake: a port probe).
int cproxy_tls_peer_sent_bytes(void *session);

/// The OpenSSL version string.
const char *cproxy_tls_library_version(void);
#endif
