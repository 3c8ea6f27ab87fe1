/// Reason phrases and the proxy's built-in error pages.
public enum HTTPStatusText {
    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 407: return "Proxy Authentication Required"
        case 408: return "Request Time-out"
        case 410: return "Gone"
        case 413: return "Payload Too Large"
        case 414: return "URI Too Long"
        case 425: return "Too Early"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Time-out"
        case 102: return "Processing"
        case 202: return "Accepted"
        case 203: return "Non-Authoritative Information"
        case 205: return "Reset Content"
        case 206: return "Partial Content"
        case 207: return "Multi-Status"
        case 300: return "Multiple Choices"
        case 305: return "Use Proxy"
        case 402: return "Payment Required"
        case 406: return "Not Acceptable"
        case 409: return "Conflict"
        case 411: return "Length Required"
        case 412: return "Precondition Failed"
        case 415: return "Unsupported Media Type"
        case 416: return "Range Not Satisfiable"
        case 417: return "Expectation Failed"
        case 418: return "I'm a teapot"
        case 421: return "Misdirected Request"
        case 422: return "Unprocessable Content"
        case 423: return "Locked"
        case 426: return "Upgrade Required"
        case 428: return "Precondition Required"
        case 451: return "Unavailable For Legal Reasons"
        case 505: return "HTTP Version Not Supported"
        case 507: return "Insufficient Storage"
        case 508: return "Loop Detected"
        case 511: return "Network Authentication Required"
        // Any other code: its class, as HAProxy words it.
        case 100...199: return "Informational"
        case 200...299: return "Success"
        case 300...399: return "Redirection"
        case 400...499: return "Client Error"
        case 500...599: return "Server Error"
        default: return "Other"
        }
    }

    /// A complete response with a short HTML body, closing the connection (as HAProxy's are).
    public static func errorPage(_ status: Int) -> [UInt8] {
        let reason = self.reason(status)
        let body = "<html><body><h1>\(status) \(reason)</h1>\n\(explanation(status))\n</body></html>\n"
        let head = "HTTP/1.1 \(status) \(reason)\r\ncontent-length: \(body.utf8.count)\r\ncache-control: no-cache\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n"
        return Array((head + body).utf8)
    }

    static func explanation(_ status: Int) -> String {
        switch status {
        case 400: return "Your browser sent an invalid request."
        case 403: return "Request forbidden by administrative rules."
        case 408: return "Your browser didn't send a complete request in time."
        case 414: return "The request line is too long."
        case 431: return "The request headers are too large."
        case 500: return "An internal server error occurred."
        case 502: return "The server returned an invalid or incomplete response."
        case 503: return "No server is available to handle this request."
        case 504: return "The server didn't respond in time."
        default: return reason(status) + "."
        }
    }
}
