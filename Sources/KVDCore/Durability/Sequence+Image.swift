/// Between a live sequence and its durable image (docs/DURABILITY.md).
extension KVSequence {
    /// What the journal records for this sequence now. An open reservation is left out: it was
    /// never acknowledged as committed, and a restart rolls it back.
    public func image(pinned: Bool) -> SequenceImage {
        SequenceImage(id: id.raw, model: layout.name, generation: generation, length: length, everCompacted: everCompacted,
                      pinned: pinned, aliases: aliases, heads: heads)
    }

    /// The sequence an image describes, holding its pages (the caller restores the page
    /// allocator's counts from every holder at once). The image must have passed
    /// `SequenceImage.validate` for `layout`.
    public convenience init(restoring image: SequenceImage, layout: ModelLayout, tenant: String) {
        self.init(id: SequenceID(image.id), layout: layout, tenant: tenant, heads: image.heads, length: image.length,
                  generation: image.generation, everCompacted: image.everCompacted, aliases: image.aliases)
    }

    /// Pages each head took beyond the `before` page counts (an append or commit's new pages).
    public func pagesAdded(since before: [Int]) -> [[PageID]] {
        heads.indices.map { h in Array(heads[h].pages.dropFirst(before[h])) }
    }
}
