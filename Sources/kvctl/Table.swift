/// A plain-text table: a header row and left-aligned columns padded to their widest cell, numbers
/// right-aligned so their digits line up.
struct Table {
    let headers: [String]
    private(set) var rows: [[String]] = []

    init(_ headers: [String]) { self.headers = headers }

    mutating func add(_ cells: [String]) {
        precondition(cells.count == headers.count, "a row needs one cell per column")
        rows.append(cells)
    }

    func render() -> String {
        var widths = headers.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        let numeric = headers.indices.map { i in !rows.isEmpty && rows.allSatisfy { Self.looksNumeric($0[i]) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                return numeric[i] ? pad + cell : cell + pad
            }.joined(separator: "  ").trimmingTrailingSpaces()
        }
        return ([line(headers)] + rows.map(line)).joined(separator: "\n")
    }

    private static func looksNumeric(_ s: String) -> Bool {
        s.contains(where: \.isNumber) && s.allSatisfy { $0.isNumber || $0 == "." || $0 == "-" }
    }
}

/// "key: value" lines, keys padded to one width.
func keyValues(_ pairs: [(String, String)]) -> String {
    let width = pairs.map(\.0.count).max() ?? 0
    return pairs.map { k, v in k + ":" + String(repeating: " ", count: width - k.count + 1) + v }.joined(separator: "\n")
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
