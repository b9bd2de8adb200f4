package io.blkstack.dm.thin.metadata;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.block.MemoryDevice;
import io.blkstack.bufio.Buffer;
import io.blkstack.bufio.BufferCache;
import io.blkstack.bufio.DeviceBlocks;
import io.blkstack.dm.thin.Pool;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Checksummed thin metadata (issue 12, bullet 6): a flip of every 64th bit of the superblock and of
 * a block of each tree is caught by the check, which names the block; several bad blocks are all
 * named; a pool refuses metadata that fails its check; format-1 metadata (no checksums) is migrated
 * once; a pool that hit a metadata error sets needs_check and the next start is read-only.
 */
class ThinMetadataChecksumTest {

    private static final BufferCache.Config NO_AGING = BufferCache.Config.defaults().withAge(0, 0);
    private static final int BLOCK = 4096;

    private Kernel kernel;
    private Kernel.Attachment self;
    private BioSet set;
    private MemoryDevice meta;

    @BeforeEach
    void start() {
        kernel = Kernel.builder().name("thin-checksum").memory(32L << 20).policies(Policies.defaults()).faults(Faults.NONE)
                .build();
        self = kernel.attach("test");
        set = new BioSet(kernel, "test", 2, 2, null, false);
        meta = new MemoryDevice(kernel, "meta", 1L << 20, 0);
    }

    @AfterEach
    void stop() {
        try {
            set.close();
            kernel.close();
        } finally {
            self.close();
        }
    }

    /** Formats small-node metadata with two thin devices, a snapshot and 60 mappings; returns used blocks by tree. */
    private List<TreeSet<Long>> populate() {
        List<TreeSet<Long>> blocks = new ArrayList<>();
        try (BufferCache cache = new BufferCache(meta, BLOCK, NO_AGING)) {
            ThinMetadata md = ThinMetadata.format(cache, 1024, 128, 5);
            md.createThin(1);
            for (long v = 0; v < 60; v++) {
                md.insertMapping(1, v * 3, md.allocDataBlock(0, 1024));
            }
            md.createSnap(2, 1);
            md.commit();
            assertEquals(List.of(), md.check());
            for (long root : md.roots()) {
                TreeSet<Long> tree = new TreeSet<>();
                md.tree().walkBlocks(root, tree::add);
                blocks.add(tree);
            }
        }
        assertTrue(blocks.get(0).size() > 3, "the mapping tree has internal nodes and leaves: " + blocks);
        return blocks;
    }

    /** Checks the committed metadata through a fresh cache (so every block comes from the device). */
    private List<String> checkDevice() {
        try (BufferCache cache = new BufferCache(meta, BLOCK, NO_AGING)) {
            return ThinMetadata.checkCommitted(cache);
        }
    }

    private static boolean names(List<String> problems, long block) {
        String all = String.join("\n", problems);
        return all.contains("metadata block " + block + ":") || all.contains("metadata block " + block + ")");
    }

    private static byte[] flip(byte[] image, int bit) {
        byte[] copy = image.clone();
        copy[bit >>> 3] ^= (byte) (1 << (bit & 7));
        return copy;
    }

    @Test
    void everySixtyFourthBitFlipOfTheSuperblockAndOfEachTreesBlocksIsDetected() {
        List<TreeSet<Long>> trees = populate();
        TreeSet<Long> targets = new TreeSet<>();
        targets.add(MetadataSpace.SUPERBLOCK);
        for (TreeSet<Long> tree : trees) {
            targets.add(tree.first()); // the root or a low block of each tree
            targets.add(tree.last());
        }
        int flips = 0;
        for (long block : targets) {
            byte[] original = DeviceBlocks.read(set, meta, block);
            for (int bit = 0; bit < BLOCK * 8; bit += 64) {
                DeviceBlocks.write(set, meta, block, flip(original, bit));
                List<String> problems = checkDevice();
                assertFalse(problems.isEmpty(), "flip of bit " + bit + " of block " + block + " passed the check");
                assertTrue(names(problems, block), "flip of bit " + bit + " of block " + block + ": " + problems);
                flips++;
            }
            DeviceBlocks.write(set, meta, block, original);
        }
        assertEquals(targets.size() * BLOCK * 8 / 64, flips);
        assertEquals(List.of(), checkDevice(), "clean again once every block is restored");
    }

    @Test
    void checkNamesEveryBadBlockNotOnlyTheFirst() {
        List<TreeSet<Long>> trees = populate();
        List<Long> bad = List.of(trees.get(0).last(), trees.get(1).last(), trees.get(2).first());
        for (long block : bad) {
            DeviceBlocks.write(set, meta, block, flip(DeviceBlocks.read(set, meta, block), 4000 * 8 + 3));
        }
        List<String> problems = checkDevice();
        for (long block : bad) {
            assertTrue(names(problems, block), "block " + block + " not named: " + problems);
        }
        assertEquals(bad.size(), problems.size(), "one line per bad block: " + problems);
    }

    @Test
    void poolRefusesMetadataThatFailsItsCheck() {
        List<TreeSet<Long>> trees = populate();
        long leaf = trees.get(0).last();
        DeviceBlocks.write(set, meta, leaf, flip(DeviceBlocks.read(set, meta, leaf), 200 * 8));
        MemoryDevice data = new MemoryDevice(kernel, "data", 1024L * 128 * 512, 0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Pool.open(kernel, "pool", meta, data, 128, 0, Pool.Features.none()));
        assertTrue(e.getMessage().contains("metadata block " + leaf + ": checksum mismatch"), e.getMessage());
        assertTrue(e.getMessage().contains("refusing to open pool pool"), e.getMessage());
    }

    @Test
    void poolNeverFormatsOverASuperblockWithADamagedMagic() {
        populate();
        byte[] original = DeviceBlocks.read(set, meta, 0);
        DeviceBlocks.write(set, meta, 0, flip(original, 0));
        MemoryDevice data = new MemoryDevice(kernel, "data", 1024L * 128 * 512, 0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Pool.open(kernel, "pool", meta, data, 128, 0, Pool.Features.none()));
        assertTrue(e.getMessage().contains("superblock magic"), e.getMessage());
        DeviceBlocks.write(set, meta, 0, original);
        assertEquals(List.of(), checkDevice(), "the metadata was not formatted over");
    }

    @Test
    void formatOneMetadataIsMigratedOnceAndThenProtected() {
        List<TreeSet<Long>> trees = populate();
        // Turn it into format 1: version 1, zero checksum and flags fields, as blkstack wrote before.
        try (BufferCache cache = new BufferCache(meta, BLOCK, NO_AGING)) {
            Buffer sb = cache.read(0);
            sb.putInt(8, ThinMetadata.VERSION_UNCHECKSUMMED);
            sb.putLong(72, 0);
            cache.markDirty(sb);
            cache.release(sb);
            for (TreeSet<Long> tree : trees) {
                for (long b : tree) {
                    Buffer node = cache.read(b);
                    node.putInt(BTree.CHECKSUM_OFFSET, 0);
                    cache.markDirty(node);
                    cache.release(node);
                }
            }
        }
        assertEquals(List.of(), checkDevice(), "format 1 reads clean without checksums");
        try (BufferCache cache = new BufferCache(meta, BLOCK, NO_AGING)) {
            assertEquals(ThinMetadata.VERSION_UNCHECKSUMMED, ThinMetadata.open(cache, false).version());
        }
        MemoryDevice data = new MemoryDevice(kernel, "data", 1024L * 128 * 512, 0);
        Pool readOnly = Pool.open(kernel, "pool", meta, data, 128, 0, new Pool.Features(false, false, false, true,
                Pool.NO_SPACE_TIMEOUT_DEFAULT_NANOS));
        try {
            assertEquals(0, readOnly.metadata().migratedFrom(), "a read_only pool does not write");
            assertEquals(ThinMetadata.VERSION_UNCHECKSUMMED, readOnly.metadata().version());
            assertEquals(60 * 1L, readOnly.metadata().mappings(1, 0, 1000, 1000).size());
        } finally {
            readOnly.close();
        }
        Pool pool = Pool.open(kernel, "pool", meta, data, 128, 0, Pool.Features.none());
        try {
            assertEquals(ThinMetadata.VERSION_UNCHECKSUMMED, pool.metadata().migratedFrom());
            assertEquals(ThinMetadata.VERSION, pool.metadata().version());
            assertEquals(60 * 1L, pool.metadata().mappings(1, 0, 1000, 1000).size());
        } finally {
            pool.close();
        }
        pool = Pool.open(kernel, "pool", meta, data, 128, 0, Pool.Features.none());
        try {
            assertEquals(0, pool.metadata().migratedFrom(), "migrated once only");
            assertEquals(60 * 1L, pool.metadata().mappings(2, 0, 1000, 1000).size());
        } finally {
            pool.close();
        }
        assertEquals(List.of(), checkDevice());
        long leaf = trees.get(0).last();
        DeviceBlocks.write(set, meta, leaf, flip(DeviceBlocks.read(set, meta, leaf), 64 * 100));
        assertTrue(names(checkDevice(), leaf), "after migration a flip is caught");
    }

    @Test
    void needsCheckMakesTheNextStartReadOnlyUntilCleared() {
        populate();
        try (BufferCache cache = new BufferCache(meta, BLOCK, NO_AGING)) {
            ThinMetadata md = ThinMetadata.open(cache);
            assertFalse(md.needsCheck());
            md.setNeedsCheck(true);
        }
        List<String> problems = checkDevice();
        assertEquals(1, problems.size(), problems.toString());
        assertTrue(problems.get(0).startsWith("needs_check flag set"), problems.toString());
        MemoryDevice data = new MemoryDevice(kernel, "data", 1024L * 128 * 512, 0);
        Pool pool = Pool.open(kernel, "pool", meta, data, 128, 0, Pool.Features.none());
        try {
            assertEquals(Pool.Mode.READ_ONLY, pool.mode());
        } finally {
            pool.close();
        }
        try (BufferCache cache = new BufferCache(meta, BLOCK, NO_AGING)) {
            ThinMetadata.open(cache, false).setNeedsCheck(false);
        }
        assertEquals(List.of(), checkDevice());
        pool = Pool.open(kernel, "pool", meta, data, 128, 0, Pool.Features.none());
        try {
            assertEquals(Pool.Mode.RW, pool.mode());
        } finally {
            pool.close();
        }
    }
}
