package io.blkstack.dm.thin.metadata;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.bufio.BufferCache;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeMap;
import java.util.function.Consumer;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.junit.jupiter.api.Test;

/**
 * Thin metadata: mappings, reference counts, snapshots, and crash consistency. The crash property
 * runs random provisioning, discards, snapshots and deletes with commits at random points, then
 * writes every dirty node of the unfinished transaction to the device (the worst case: all of it
 * landed, only the superblock did not) and drops the in-memory state. Reopening must give exactly
 * the state of the last commit, and that state must pass {@link ThinMetadata#check}.
 */
class ThinMetadataCrashTest {

    private static final BufferCache.Config NO_AGING = BufferCache.Config.defaults().withAge(0, 0);
    private static final long DATA_BLOCKS = 4096;

    /** The model: (device, virtual block) to data block, plus which devices exist. */
    private record Model(TreeMap<Long, Long> map, TreeMap<Long, Boolean> devices) {
        Model copy() {
            return new Model(new TreeMap<>(map), new TreeMap<>(devices));
        }
    }

    @Provide
    Arbitrary<List<Integer>> script() {
        return Arbitraries.integers().between(0, 1_000_000).list().ofMinSize(100).ofMaxSize(700);
    }

    @Property(tries = 25)
    void reopenAfterCrashGivesTheLastCommit(@ForAll("script") List<Integer> script) {
        Kernel kernel = Kernel.builder().name("thin-crash").memory(16L << 20).policies(Policies.defaults())
                .faults(Faults.NONE).build();
        Kernel.Attachment self = kernel.attach("test");
        try {
            MemoryDevice meta = new MemoryDevice(kernel, "meta", 8L << 20, 0);
            Model model = new Model(new TreeMap<>(), new TreeMap<>());
            Model committed;
            long committedTx;
            try (BufferCache cache = new BufferCache(meta, 4096, NO_AGING)) {
                ThinMetadata md = ThinMetadata.format(cache, DATA_BLOCKS, 128, 6);
                md.createThin(1);
                md.createThin(2);
                model.devices().put(1L, true);
                model.devices().put(2L, true);
                md.commit();
                committed = model.copy();
                committedTx = md.commitCount();
                long nextSnap = 10;
                for (int r : script) {
                    int kind = r % 100;
                    List<Long> devs = new ArrayList<>(model.devices().keySet());
                    long dev = devs.get((r / 100) % devs.size());
                    long vblock = (r / 1000) % 120;
                    if (kind < 55) {
                        long data = md.allocDataBlock(0, DATA_BLOCKS);
                        md.insertMapping(dev, vblock, data);
                        model.map().put(ThinMetadata.key(dev, vblock), data);
                    } else if (kind < 80) {
                        long had = md.removeMapping(dev, vblock);
                        Long want = model.map().remove(ThinMetadata.key(dev, vblock));
                        assertEquals(want == null ? -1 : want, had);
                    } else if (kind < 86) {
                        md.createSnap(nextSnap, dev);
                        for (var e : new ArrayList<>(model.map().subMap(ThinMetadata.key(dev, 0), true,
                                ThinMetadata.key(dev, ThinMetadata.VIRTUAL_BLOCK_MAX), true).entrySet())) {
                            model.map().put(ThinMetadata.key(nextSnap, e.getKey() & ThinMetadata.VIRTUAL_BLOCK_MAX), e.getValue());
                        }
                        model.devices().put(nextSnap, true);
                        nextSnap++;
                    } else if (kind < 89 && devs.size() > 2 && dev > 2) {
                        md.deleteThin(dev);
                        model.map().subMap(ThinMetadata.key(dev, 0), true, ThinMetadata.key(dev + 1, 0), false).clear();
                        model.devices().remove(dev);
                    } else if (kind < 96) {
                        assertEquals(model.map().getOrDefault(ThinMetadata.key(dev, vblock), -1L), md.lookup(dev, vblock));
                    } else {
                        md.commit();
                        committed = model.copy();
                        committedTx = md.commitCount();
                    }
                }
                assertEquals(List.of(), md.check(), "current transaction consistent");
                cache.writeDirtyBuffersWait(); // crash after every node but not the superblock reached the disk
            }
            try (BufferCache cache = new BufferCache(meta, 4096, NO_AGING)) {
                ThinMetadata md = ThinMetadata.open(cache);
                assertEquals(committedTx, md.commitCount());
                assertEquals(List.of(), md.check(), "committed state consistent");
                for (long dev : committed.devices().keySet()) {
                    assertTrue(md.deviceExists(dev), "device " + dev);
                    List<long[]> got = md.mappings(dev, 0, ThinMetadata.VIRTUAL_BLOCK_MAX, 100_000);
                    var want = committed.map().subMap(ThinMetadata.key(dev, 0), true, ThinMetadata.key(dev + 1, 0), false);
                    assertEquals(want.size(), got.size(), "mapped blocks of device " + dev);
                    for (long[] m : got) {
                        assertEquals(want.get(ThinMetadata.key(dev, m[0])), m[1], "device " + dev + " block " + m[0]);
                    }
                }
                for (long dev = 1; dev < 200; dev++) {
                    assertEquals(committed.devices().containsKey(dev), md.deviceExists(dev), "device " + dev);
                }
                long distinct = committed.map().values().stream().distinct().count();
                assertEquals(distinct, md.usedDataBlocks());
            }
        } finally {
            try {
                kernel.close();
            } finally {
                self.close();
            }
        }
    }

    @Test
    void allocationSkipsBlocksUsedNowOrAtTheLastCommitAndKeepsToItsRange() {
        withMetadata("thin-alloc", 1000, md -> {
            md.createThin(1);
            for (long v = 0; v < 10; v++) {
                assertEquals(v, md.allocDataBlock(0, 1000), "the lowest free block");
                md.insertMapping(1, v, v);
            }
            md.commit();
            md.removeMapping(1, 3); // free now, still used by the committed tree
            md.removeMapping(1, 12); // never mapped: nothing changes
            assertEquals(10, md.allocDataBlock(0, 1000), "3 is used at the last commit");
            assertEquals(11, md.allocDataBlock(5, 1000), "from the start of the range");
            assertEquals(-1, md.allocDataBlock(0, 3), "everything below 3 is used");
            assertEquals(-1, md.allocDataBlock(1000, 2000), "past the data device (1000 blocks)");
            md.insertMapping(1, 20, 10);
            md.insertMapping(1, 21, 11);
            md.commit();
            assertEquals(3, md.allocDataBlock(0, 1000), "3 is free once the commit that freed it is done");
            assertEquals(999, md.allocDataBlock(999, 2000), "the last block");
        });
    }

    /** Runs {@code body} on new metadata for {@code dataBlocks} data blocks, over a memory device in its own kernel. */
    private static void withMetadata(String name, long dataBlocks, Consumer<ThinMetadata> body) {
        Kernel kernel = Kernel.builder().name(name).memory(16L << 20).build();
        Kernel.Attachment self = kernel.attach("test");
        try {
            MemoryDevice meta = new MemoryDevice(kernel, "meta", 4L << 20, 0);
            try (BufferCache cache = new BufferCache(meta, 4096, NO_AGING)) {
                body.accept(ThinMetadata.format(cache, dataBlocks, 128, 255));
            }
        } finally {
            try {
                kernel.close();
            } finally {
                self.close();
            }
        }
    }

    @Test
    void snapshotsShareBlocksAndDeleteFreesOnlyUnsharedOnes() {
        withMetadata("thin-snap", 100, md -> {
            md.createThin(1);
            long a = md.allocDataBlock(0, 100);
            long b = md.allocDataBlock(0, 100);
            md.insertMapping(1, 0, a);
            md.insertMapping(1, 5, b);
            md.createSnap(2, 1);
            assertEquals(2, md.refCount(a));
            assertEquals(a, md.lookup(2, 0));
            // Breaking sharing: the origin gets a new block for 0; the snapshot keeps a.
            long c = md.allocDataBlock(0, 100);
            md.insertMapping(1, 0, c);
            assertEquals(1, md.refCount(a));
            assertEquals(a, md.lookup(2, 0));
            md.deleteThin(2);
            assertEquals(0, md.refCount(a), "a was only the snapshot's");
            assertEquals(1, md.refCount(b), "b is still the origin's");
            assertEquals(-1, md.lookup(2, 5));
            assertThrows(IllegalArgumentException.class, () -> md.createThin(1));
            assertEquals(List.of(), md.check());
            md.commit();
            assertTrue(md.isDataBlockFree(a), "freed and committed: reusable");
        });
    }
}
