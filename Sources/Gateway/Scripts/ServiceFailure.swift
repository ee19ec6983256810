/// Why a service call (`Websocket.*`, and every later service) did not do what it was asked: the
/// error object scripts get, `{type=, error=, status=}`, with an HTTP-like status.
enum ServiceFailure: Error {
    case badRequest(String)
    case notFound(String)
    /// An outbound connection of that name exists.
    case conflict(String)
    /// The socket's send queue is over half of limits.sendQueueBytes: the reader is slow.
    case tooManyRequests(String)
    /// The outbound connection is not open (connecting, reconnecting or disconnected).
    case unavailable(String)
    /// An upstream (Http.request's server) could not be reached or answered badly.
    case badGateway(String)
    /// An upstream did not answer in time.
    case gatewayTimeout(String)
    /// The keystore would pass keystore.maxBytes.
    case insufficientStorage(String)

    var status: Int {
        switch self {
        case .badRequest: return 400
        case .notFound: return 404
        case .conflict: return 409
        case .tooManyRequests: return 429
        case .unavailable: return 503
        case .badGateway: return 502
        case .gatewayTimeout: return 504
        case .insufficientStorage: return 507
        }
    }

    var type: String {
        switch self {
        case .badRequest: return "BadRequest"
        case .notFound: return "NotFound"
        case .conflict: return "Conflict"
        case .tooManyRequests: return "TooManyRequests"
        case .unavailable: return "ServiceUnavailable"
        case .badGateway: return "BadGateway"
        case .gatewayTimeout: return "GatewayTimeout"
        case .insufficientStorage: return "InsufficientStorage"
        }
    }

    var message: String {
        switch self {
        case .badRequest(let m), .notFound(let m), .conflict(let m), .tooManyRequests(let m), .unavailable(let m),
             .badGateway(let m), .gatewayTimeout(let m), .insufficientStorage(let m): return m
        }
    }
}
