package io.blkstack.dm.thin.metadata;

import io.blkstack.bufio.Buffer;
import io.blkstack.bufio.BufferCache;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.function.LongConsumer;
import java.util.function.LongSupplier;

/**
 * A copy-on-write B-tree of {@code long} keys to {@code long} values in metadata blocks, read and
 * written through a {@link BufferCache} (the model is the kernel's {@code persistent-data}
 * {@code dm-btree}).
 *
 * <p>A tree is named by its root block; every update returns the new root. A node touched for
 * the first time since the last commit is <em>shadowed</em>: written to a newly allocated block
 * while the old one stays intact for the committed tree, so a commit is atomic by writing the
 * superblock last. Nodes allocated in the current transaction are updated in place.
 *
 * <p>Node layout: int magic and kind, int entry count, int capacity, int crc32c of the block
 * ({@link BlockChecksum}: every other byte of the block and its block number), then
 * {@code capacity} keys and {@code capacity} values. A node's checksum is verified the first time
 * it is used after the cache read it from the device ({@link Buffer#isValidated}; format 1
 * metadata had zeroes there and is read with checks off until it is migrated). Lookups search a
 * node in its buffer; an insert into a node already new in this transaction changes it there; the
 * other updates decode the node, change it and encode it again. In an internal node the key of entry
 * {@code i} is a lower bound of every key in child {@code i} and the value is the child's block.
 * Inserts split full nodes on the way back up; removes rebalance a child that falls below a third
 * of the capacity with a sibling (merge if both fit in one node, else redistribute), and a root
 * left with one child is replaced by that child. The depth is logarithmic, so recursion is bounded.
 */
public final class BTree {

    /** Runs the allocation and write of the new node of a split; lets a caller offload it (seed 004). */
    @FunctionalInterface
    public interface SplitRunner {
        /** Runs {@code split} (which returns the new node's block) here or elsewhere and returns its result. */
        long run(LongSupplier split);
    }

    /** Runs splits on the calling task. */
    public static final SplitRunner INLINE = LongSupplier::getAsLong;

    /** Visitor of entries in key order; returns false to stop. */
    @FunctionalInterface
    public interface EntryVisitor {
        boolean visit(long key, long value);
    }

    private static final int MAGIC_LEAF = 0x7B1EAF01;
    private static final int MAGIC_INTERNAL = 0x7B1E1702;
    private static final int HEADER_BYTES = 16;
    /** Where a node keeps its crc32c. */
    static final int CHECKSUM_OFFSET = 12;

    private final BufferCache cache;
    private final MetadataSpace space;
    private final int capacity;
    private final int minEntries;
    private SplitRunner splitRunner = INLINE;
    private boolean checksums = true;
    private boolean lastInsertWasNew;
    private long lastInsertOldValue;

    /** A tree layer with at most {@code capacity} entries per node (at least 5, at most what a block holds). */
    public BTree(BufferCache cache, MetadataSpace space, int capacity) {
        int fits = (cache.blockSize() - HEADER_BYTES) / 16;
        if (capacity < 5 || capacity > fits) {
            throw new IllegalArgumentException("btree node capacity " + capacity + " outside 5.." + fits);
        }
        this.cache = cache;
        this.space = space;
        this.capacity = capacity;
        this.minEntries = capacity / 3;
    }

    /** The largest capacity a node of {@code blockSize} bytes holds. */
    public static int maxCapacity(int blockSize) {
        return (blockSize - HEADER_BYTES) / 16;
    }

    /** Sets who runs split allocations (default inline). */
    public void setSplitRunner(SplitRunner runner) {
        this.splitRunner = runner == null ? INLINE : runner;
    }

    public int capacity() {
        return capacity;
    }

    /** Whether loads verify node checksums: off only while format-1 metadata is opened or migrated. */
    void setChecksums(boolean on) {
        this.checksums = on;
    }

    /** Node contents decoded from a block; arrays have one spare slot for a transient overflow. */
    private final class Node {
        boolean leaf;
        int n;
        final long[] keys = new long[capacity + 1];
        final long[] vals = new long[capacity + 1];

        void insertAt(int i, long key, long val) {
            System.arraycopy(keys, i, keys, i + 1, n - i);
            System.arraycopy(vals, i, vals, i + 1, n - i);
            keys[i] = key;
            vals[i] = val;
            n++;
        }

        void removeAt(int i) {
            System.arraycopy(keys, i + 1, keys, i, n - i - 1);
            System.arraycopy(vals, i + 1, vals, i, n - i - 1);
            n--;
        }

        /** Index of the exact key in a leaf, or {@code -(insertion point) - 1}. */
        int find(long key) {
            return Arrays.binarySearch(keys, 0, n, key);
        }

        /** In an internal node: the largest i with keys[i] <= key, or -1. */
        int child(long key) {
            return childIndex(find(key));
        }
    }

    private Node load(long block) {
        Buffer b = cache.read(block);
        try {
            Node node = new Node();
            node.leaf = checkHeader(b, block);
            node.n = b.getInt(4);
            b.getLongs(keyOffset(0), node.keys, node.n);
            b.getLongs(valueOffset(0), node.vals, node.n);
            return node;
        } finally {
            cache.release(b);
        }
    }

    /**
     * Checks a held node's checksum (once per read from the device: {@link Buffer#isValidated}),
     * magic and shape; returns whether it is a leaf.
     *
     * @throws CorruptMetadataException naming the block
     */
    private boolean checkHeader(Buffer b, long block) {
        if (checksums && !b.isValidated()) {
            BlockChecksum.verify(b, CHECKSUM_OFFSET, block, "metadata block " + block);
            b.markValidated();
        }
        int magic = b.getInt(0);
        if (magic != MAGIC_LEAF && magic != MAGIC_INTERNAL) {
            throw new CorruptMetadataException("metadata block " + block + " is not a btree node (magic 0x"
                    + Integer.toHexString(magic) + ")");
        }
        int n = b.getInt(4);
        int cap = b.getInt(8);
        if (cap != capacity || n < 0 || n > capacity) {
            throw new CorruptMetadataException("btree node " + block + ": " + n + " entries, capacity " + cap
                    + ", expected capacity " + capacity);
        }
        return magic == MAGIC_LEAF;
    }

    private void store(long block, Node node) {
        if (node.n > capacity) {
            throw new IllegalStateException("storing btree node " + block + " with " + node.n + " > " + capacity + " entries");
        }
        Buffer b = cache.newBuffer(block);
        try {
            b.putInt(0, node.leaf ? MAGIC_LEAF : MAGIC_INTERNAL);
            b.putInt(4, node.n);
            b.putInt(8, capacity);
            b.putLongs(keyOffset(0), node.keys, node.n);
            b.putLongs(valueOffset(0), node.vals, node.n);
            sealDirty(b, block);
        } finally {
            cache.release(b);
        }
    }

    /** The block to write a touched node to: itself if new in this transaction, else a fresh one (the old is freed). */
    private long shadow(long block) {
        if (space.isNew(block)) {
            return block;
        }
        long fresh = space.alloc();
        space.free(block);
        return fresh;
    }

    /** Creates an empty tree; returns its root. */
    public long create() {
        long root = space.alloc();
        Node node = new Node();
        node.leaf = true;
        store(root, node);
        return root;
    }

    /**
     * Looks {@code key} up; returns its value or {@code missing}. Searches each node in its buffer,
     * reading only the keys a binary search visits.
     */
    public long lookup(long root, long key, long missing) {
        long block = root;
        while (true) {
            Buffer b = cache.read(block);
            try {
                boolean leaf = checkHeader(b, block);
                int i = find(b, b.getInt(4), key);
                if (leaf) {
                    return i >= 0 ? b.getLong(valueOffset(i)) : missing;
                }
                int child = childIndex(i);
                if (child < 0) {
                    return missing;
                }
                block = b.getLong(valueOffset(child));
            } finally {
                cache.release(b);
            }
        }
    }

    /** From a search's result ({@link #find}), an internal node's entry for the key: the largest i with keys[i] <= key, or -1. */
    private static int childIndex(int found) {
        return found >= 0 ? found : -found - 2;
    }

    /** {@link Node#find} on a node's keys in its held buffer: the key's index, or {@code -(insertion point) - 1}. */
    private static int find(Buffer b, int n, long key) {
        int lo = 0;
        int hi = n - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            long k = b.getLong(keyOffset(mid));
            if (k < key) {
                lo = mid + 1;
            } else if (k > key) {
                hi = mid - 1;
            } else {
                return mid;
            }
        }
        return -lo - 1;
    }

    /** Whether the last {@link #insert} added a key (rather than overwriting one). */
    public boolean lastInsertWasNew() {
        return lastInsertWasNew;
    }

    /** The value the last {@link #insert} overwrote (meaningful when it did not add a key). */
    public long lastInsertOldValue() {
        return lastInsertOldValue;
    }

    /** Inserts or overwrites {@code key}; returns the new root. */
    public long insert(long root, long key, long value) {
        lastInsertWasNew = false;
        long[] split = new long[2];
        long newRoot = insertInto(root, key, value, split);
        if (split[1] == 0) {
            return newRoot;
        }
        Node top = new Node();
        top.leaf = false;
        top.n = 2;
        top.keys[0] = firstKey(newRoot);
        top.vals[0] = newRoot;
        top.keys[1] = split[0];
        top.vals[1] = split[1];
        long topBlock = space.alloc();
        store(topBlock, top);
        return topBlock;
    }

    private long firstKey(long block) {
        Node node = load(block);
        if (node.n == 0) {
            throw new IllegalStateException("btree node " + block + " is empty after a split");
        }
        return node.keys[0];
    }

    /** Inserts below {@code block}; returns its new block and sets {@code split} to (key, block) of a new right sibling. */
    private long insertInto(long block, long key, long value, long[] split) {
        if (space.isNew(block) && insertInPlace(block, key, value, split)) {
            return block;
        }
        Node node = load(block); // before the shadow: a read that fails must leave the space as it was
        long target = shadow(block);
        if (node.leaf) {
            int i = node.find(key);
            if (i >= 0) {
                lastInsertOldValue = node.vals[i];
                node.vals[i] = value;
            } else {
                node.insertAt(-i - 1, key, value);
                lastInsertWasNew = true;
            }
        } else {
            int i = node.child(key);
            if (i < 0) {
                i = 0;
                node.keys[0] = key;
            }
            long[] childSplit = new long[2];
            node.vals[i] = insertInto(node.vals[i], key, value, childSplit);
            if (childSplit[1] != 0) {
                node.insertAt(i + 1, childSplit[0], childSplit[1]);
            }
        }
        if (node.n > capacity) {
            splitNode(node, split);
        }
        store(target, node);
        return target;
    }

    /**
     * {@link #insertInto} for a node already new in this transaction, changed in its buffer instead
     * of decoded and encoded whole: a leaf that does not split gets its entry in place (the entries
     * after it move up by one); an internal node only has its child's pointer rewritten, and only
     * when the child moved, or is decoded to take the child's split. Returns false, having changed
     * nothing, for a leaf that would split and for a key below an internal node's first (which
     * {@link #insertInto} handles the general way).
     */
    private boolean insertInPlace(long block, long key, long value, long[] split) {
        int c;
        long child;
        Buffer b = cache.read(block);
        try {
            boolean leaf = checkHeader(b, block);
            int n = b.getInt(4);
            int i = find(b, n, key);
            if (leaf) {
                if (i < 0 && n == capacity) {
                    return false;
                }
                if (i >= 0) {
                    lastInsertOldValue = b.getLong(valueOffset(i));
                    b.putLong(valueOffset(i), value);
                } else {
                    int at = -i - 1;
                    b.moveLongs(keyOffset(at), keyOffset(at + 1), n - at);
                    b.moveLongs(valueOffset(at), valueOffset(at + 1), n - at);
                    b.putLong(keyOffset(at), key);
                    b.putLong(valueOffset(at), value);
                    b.putInt(4, n + 1);
                    lastInsertWasNew = true;
                }
                sealDirty(b, block);
                return true;
            }
            c = childIndex(i);
            if (c < 0) {
                return false;
            }
            child = b.getLong(valueOffset(c));
        } finally {
            cache.release(b);
        }
        long[] childSplit = new long[2];
        long moved = insertInto(child, key, value, childSplit);
        if (childSplit[1] != 0) {
            Node node = load(block);
            node.vals[c] = moved;
            node.insertAt(c + 1, childSplit[0], childSplit[1]);
            if (node.n > capacity) {
                splitNode(node, split);
            }
            store(block, node);
        } else if (moved != child) {
            Buffer w = cache.read(block);
            try {
                w.putLong(valueOffset(c), moved);
                sealDirty(w, block);
            } finally {
                cache.release(w);
            }
        }
        return true;
    }

    private static int keyOffset(int i) {
        return HEADER_BYTES + 8 * i;
    }

    private int valueOffset(int i) {
        return HEADER_BYTES + 8 * capacity + 8 * i;
    }

    /** Seals a held node changed in place and marks it dirty. */
    private void sealDirty(Buffer b, long block) {
        BlockChecksum.seal(b, CHECKSUM_OFFSET, block);
        b.markValidated();
        cache.markDirty(b);
    }

    /** Moves the upper half of an overfull node to a new block (through the split runner). */
    private void splitNode(Node node, long[] split) {
        Node right = new Node();
        right.leaf = node.leaf;
        int keep = node.n / 2;
        right.n = node.n - keep;
        System.arraycopy(node.keys, keep, right.keys, 0, right.n);
        System.arraycopy(node.vals, keep, right.vals, 0, right.n);
        node.n = keep;
        long rightBlock = splitRunner.run(() -> {
            long b = space.alloc();
            store(b, right);
            return b;
        });
        split[0] = right.keys[0];
        split[1] = rightBlock;
    }

    /** Removes {@code key} if present; returns the new root (unchanged if the key was absent). */
    public long remove(long root, long key) {
        long[] out = new long[2];
        if (!removeFrom(root, key, out)) {
            return root;
        }
        long newRoot = out[0];
        Node top = load(newRoot);
        while (!top.leaf && top.n == 1) {
            space.free(newRoot);
            newRoot = top.vals[0];
            top = load(newRoot);
        }
        return newRoot;
    }

    /** Removes below {@code block}; false if absent; else out = (new block, entries left). */
    private boolean removeFrom(long block, long key, long[] out) {
        Node node = load(block);
        if (node.leaf) {
            int i = node.find(key);
            if (i < 0) {
                return false;
            }
            long target = shadow(block);
            node.removeAt(i);
            store(target, node);
            out[0] = target;
            out[1] = node.n;
            return true;
        }
        int i = node.child(key);
        if (i < 0) {
            return false;
        }
        long[] childOut = new long[2];
        if (!removeFrom(node.vals[i], key, childOut)) {
            return false;
        }
        long target = shadow(block);
        node.vals[i] = childOut[0];
        if (childOut[1] < minEntries && node.n > 1) {
            rebalance(node, i);
        }
        store(target, node);
        out[0] = target;
        out[1] = node.n;
        return true;
    }

    /** Child {@code i} is short: merge it with a sibling or share entries evenly. */
    private void rebalance(Node parent, int i) {
        int li = i + 1 < parent.n ? i : i - 1;
        int ri = li + 1;
        long leftBlock = shadow(parent.vals[li]);
        Node left = load(parent.vals[li]);
        long rightOld = parent.vals[ri];
        Node right = load(rightOld);
        parent.vals[li] = leftBlock;
        if (left.n + right.n <= capacity) {
            System.arraycopy(right.keys, 0, left.keys, left.n, right.n);
            System.arraycopy(right.vals, 0, left.vals, left.n, right.n);
            left.n += right.n;
            space.free(rightOld);
            parent.removeAt(ri);
            store(leftBlock, left);
            return;
        }
        long rightBlock = shadow(rightOld);
        int total = left.n + right.n;
        long[] keys = new long[total];
        long[] vals = new long[total];
        System.arraycopy(left.keys, 0, keys, 0, left.n);
        System.arraycopy(left.vals, 0, vals, 0, left.n);
        System.arraycopy(right.keys, 0, keys, left.n, right.n);
        System.arraycopy(right.vals, 0, vals, left.n, right.n);
        left.n = total / 2;
        right.n = total - left.n;
        System.arraycopy(keys, 0, left.keys, 0, left.n);
        System.arraycopy(vals, 0, left.vals, 0, left.n);
        System.arraycopy(keys, left.n, right.keys, 0, right.n);
        System.arraycopy(vals, left.n, right.vals, 0, right.n);
        parent.keys[ri] = right.keys[0];
        parent.vals[ri] = rightBlock;
        store(leftBlock, left);
        store(rightBlock, right);
    }

    /** Visits entries with {@code lo <= key <= hi} in key order until the visitor returns false; returns false if stopped. */
    public boolean forEach(long root, long lo, long hi, EntryVisitor visitor) {
        Node node = load(root);
        if (node.leaf) {
            for (int i = 0; i < node.n; i++) {
                if (node.keys[i] > hi) {
                    return false;
                }
                if (node.keys[i] >= lo && !visitor.visit(node.keys[i], node.vals[i])) {
                    return false;
                }
            }
            return true;
        }
        int start = Math.max(0, node.child(lo));
        for (int i = start; i < node.n; i++) {
            if (node.keys[i] > hi) {
                return false;
            }
            if (!forEach(node.vals[i], lo, hi, visitor)) {
                return false;
            }
        }
        return true;
    }

    /** Calls {@code visitor} with every block of the tree (root first). */
    public void walkBlocks(long root, LongConsumer visitor) {
        visitor.accept(root);
        Node node = load(root);
        if (!node.leaf) {
            for (int i = 0; i < node.n; i++) {
                walkBlocks(node.vals[i], visitor);
            }
        }
    }

    /**
     * Writes the checksum into a node of format-1 metadata in place (its checksum field was zero and
     * unused, so a crash half way leaves valid format-1 metadata). Loads the node first, so a node
     * that is not a node is refused rather than sealed.
     */
    void reseal(long block) {
        load(block);
        Buffer b = cache.read(block);
        try {
            BlockChecksum.seal(b, CHECKSUM_OFFSET, block);
            cache.markDirty(b);
        } finally {
            cache.release(b);
        }
    }

    /**
     * Visits every node of the tree that loads (checksum, magic, shape) and reports each one that
     * does not, without descending below it, so one bad block does not hide the others. A block
     * reached twice or outside the device is reported too; {@code seen} spans the trees of one check.
     */
    public void scan(long root, String treeName, BitSet seen, List<String> problems) {
        if (root < 0 || root >= cache.blockCount()) {
            problems.add(treeName + " tree: block " + root + " outside the metadata device (0.." + (cache.blockCount() - 1)
                    + ")");
            return;
        }
        if (seen.get((int) root)) {
            problems.add(treeName + " tree: metadata block " + root + " is reached twice");
            return;
        }
        seen.set((int) root);
        Node node;
        try {
            node = load(root);
        } catch (CorruptMetadataException e) {
            problems.add(treeName + " tree: " + e.getMessage());
            return;
        }
        if (!node.leaf) {
            for (int i = 0; i < node.n; i++) {
                scan(node.vals[i], treeName, seen, problems);
            }
        }
    }

    /**
     * Checks the tree's structure: keys strictly increasing, within the parent's bounds, every
     * non-root node at least a third full, all leaves at one depth. Returns the number of entries.
     *
     * @throws CorruptMetadataException naming the first bad node
     */
    public long check(long root) {
        long[] depth = {-1};
        return checkNode(root, Long.MIN_VALUE, Long.MAX_VALUE, true, 0, depth);
    }

    private long checkNode(long block, long lo, long hiExclusive, boolean isRoot, int level, long[] leafDepth) {
        Node node = load(block);
        if (!isRoot && node.n < Math.max(1, minEntries)) {
            throw new CorruptMetadataException("btree node " + block + " has " + node.n + " entries, fewer than " + minEntries);
        }
        if (!isRoot && !node.leaf && node.n < 2 && capacity > 5) {
            // an internal node with one child is legal only transiently at the root
        }
        for (int i = 0; i < node.n; i++) {
            if (node.keys[i] < lo || node.keys[i] >= hiExclusive) {
                throw new CorruptMetadataException("btree node " + block + ": key " + node.keys[i] + " outside [" + lo + ", "
                        + hiExclusive + ")");
            }
            if (i > 0 && node.keys[i] <= node.keys[i - 1]) {
                throw new CorruptMetadataException("btree node " + block + ": keys out of order at " + i);
            }
        }
        if (node.leaf) {
            if (leafDepth[0] < 0) {
                leafDepth[0] = level;
            } else if (leafDepth[0] != level) {
                throw new CorruptMetadataException("btree leaf " + block + " at depth " + level + ", others at " + leafDepth[0]);
            }
            return node.n;
        }
        long total = 0;
        for (int i = 0; i < node.n; i++) {
            long childHi = i + 1 < node.n ? node.keys[i + 1] : hiExclusive;
            total += checkNode(node.vals[i], node.keys[i], childHi, false, level + 1, leafDepth);
        }
        return total;
    }
}
