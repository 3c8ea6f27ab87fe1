// The system's OpenSSL 3 (Debian's libssl-dev), for CProxyTLS.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
