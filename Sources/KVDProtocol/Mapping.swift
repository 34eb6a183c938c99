import KVDCore
import SwiftProtobuf

/// Conversions between wire types (`Kvd_V1_*`, generated) and core types. Kept here so neither the
/// core nor the handlers know how the other side spells things.

/// Protocol versions this build speaks.
public enum ProtocolVersion {
    public static let current: UInt32 = 1
    public static let supported: [UInt32] = [1]
}

extension Kvd_V1_ErrorCode {
    public init(_ code: KVDError.Code) {
        self = Kvd_V1_ErrorCode(rawValue: code.rawValue) ?? .internal
    }
}

extension Kvd_V1_ErrorCode {
    /// The name the protocol documents ("NOT_FOUND"), stable for scripts.
    public var stableName: String {
        switch self {
        case .invalidArgument: "INVALID_ARGUMENT"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .permissionDenied: "PERMISSION_DENIED"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .evicted: "EVICTED"
        case .unspecified: "UNSPECIFIED"
        case .UNRECOGNIZED(let n): "UNKNOWN_\(n)"
        }
    }
}

extension Kvd_V1_Error {
    public init(_ error: KVDError) {
        self.init()
        code = Kvd_V1_ErrorCode(error.code)
        message = error.message
    }
}

extension Kvd_V1_DType {
    public init(_ dtype: DType) {
        switch dtype {
        case .f16: self = .f16
        case .bf16: self = .bf16
        case .f32: self = .f32
        }
    }

    /// The core dtype, or nil for UNSPECIFIED and unknown numbers.
    public var core: DType? {
        switch self {
        case .f16: .f16
        case .bf16: .bf16
        case .f32: .f32
        default: nil
        }
    }
}

extension Kvd_V1_ModelLayout {
    public init(_ m: ModelLayout) {
        self.init()
        name = m.name
        layers = UInt32(m.layers)
        kvHeads = UInt32(m.kvHeads)
        qHeads = UInt32(m.qHeads)
        headDim = UInt32(m.headDim)
        dtype = Kvd_V1_DType(m.dtype)
        pageTokens = UInt32(m.pageTokens)
        defaultMethod = m.defaultMethod
        // Config loading bounds each window to 0...2^24, so every one is a UInt32.
        layerWindows = m.layerWindows.map { UInt32($0) }
    }
}

extension Kvd_V1_Request.OneOf_Body {
    /// Short name of the request kind, for logs and messages.
    public var kindName: String {
        switch self {
        case .hello: "hello"
        case .createSequence: "create_sequence"
        case .append: "append"
        case .reserve: "reserve"
        case .commit: "commit"
        case .query: "query"
        case .compact: "compact"
        case .release: "release"
        case .stats: "stats"
        case .stage: "stage"
        case .rankLayers: "rank_layers"
        case .keepAlive: "keep_alive"
        case .pin: "pin"
        case .lookup: "lookup"
        case .fork: "fork"
        case .restore: "restore"
        case .listSequences: "list_sequences"
        case .listPolicies: "list_policies"
        case .reload: "reload"
        case .evict: "evict"
        }
    }

    /// Admin requests: only a connection bound as admin may send them (docs/SECURITY.md).
    public var needsAdmin: Bool {
        switch self {
        case .reload, .evict: true
        default: false
        }
    }
}

/// Little-endian bytes of a numeric array (positions, log-weights) without per-element protobuf cost.
public func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> Data {
    values.withUnsafeBufferPointer { buf in
        #if _endian(little)
        return Data(buffer: buf)
        #else
        return Data(buf.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) })
        #endif
    }
}

public func littleEndianBytes(_ values: [Float]) -> Data {
    littleEndianBytes(values.map(\.bitPattern))
}

import Foundation
