package io.blkstack.dm.thin.metadata;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.block.MemoryDevice;
import io.blkstack.bufio.BufferCache;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * The copy-on-write B-tree against a reference {@link TreeMap}: long random sequences of inserts,
 * removes, lookups and commits on a small node capacity (so splits, merges, redistributions and
 * root collapses all happen). After every sequence the tree's structure checks out, a full scan
 * equals the model, and a range scan equals the model's sub-map.
 */
class BTreePropertyTest {

    /** One operation: kind 0 insert, 1 remove, 2 lookup, 3 commit. */
    record Op(int kind, long key, long value) {
    }

    @Provide
    Arbitrary<List<Op>> ops() {
        Arbitrary<Op> op = Combinators.combine(
                Arbitraries.integers().between(0, 99),
                Arbitraries.longs().between(0, 400),
                Arbitraries.longs().between(1, 1L << 40))
                .as((k, key, value) -> new Op(k < 55 ? 0 : k < 85 ? 1 : k < 98 ? 2 : 3, key, value));
        return op.list().ofMinSize(200).ofMaxSize(1500);
    }

    @Property(tries = 40)
    void behavesLikeATreeMap(@ForAll("ops") List<Op> ops, @ForAll("capacities") int capacity) {
        Kernel kernel = Kernel.builder().name("btree-prop").memory(8L << 20).policies(Policies.defaults())
                .faults(Faults.NONE).build();
        Kernel.Attachment self = kernel.attach("test");
        try {
            MemoryDevice dev = new MemoryDevice(kernel, "meta", 8L << 20, 0);
            try (BufferCache cache = new BufferCache(dev, 4096, BufferCache.Config.defaults().withAge(0, 0))) {
                MetadataSpace space = new MetadataSpace(cache.blockCount());
                BTree tree = new BTree(cache, space, capacity);
                TreeMap<Long, Long> model = new TreeMap<>();
                long root = tree.create();
                for (Op op : ops) {
                    switch (op.kind()) {
                        case 0 -> {
                            root = tree.insert(root, op.key(), op.value());
                            assertEquals(!model.containsKey(op.key()), tree.lastInsertWasNew(), "insert " + op.key());
                            Long old = model.put(op.key(), op.value());
                            if (old != null) {
                                assertEquals(old, tree.lastInsertOldValue(), "value replaced at " + op.key());
                            }
                        }
                        case 1 -> {
                            root = tree.remove(root, op.key());
                            model.remove(op.key());
                        }
                        case 2 -> assertEquals(model.getOrDefault(op.key(), -1L), tree.lookup(root, op.key(), -1L),
                                "lookup " + op.key());
                        default -> {
                            cache.writeDirtyBuffersWait();
                            space.commit();
                        }
                    }
                }
                assertEquals(model.size(), tree.check(root));
                List<Map.Entry<Long, Long>> scanned = new ArrayList<>();
                tree.forEach(root, Long.MIN_VALUE, Long.MAX_VALUE, (k, v) -> scanned.add(Map.entry(k, v)));
                assertEquals(new ArrayList<>(model.entrySet()), scanned);
                List<Map.Entry<Long, Long>> range = new ArrayList<>();
                tree.forEach(root, 100, 250, (k, v) -> range.add(Map.entry(k, v)));
                assertEquals(new ArrayList<>(model.subMap(100L, true, 250L, true).entrySet()), range);
                for (long k = 0; k <= 400; k++) {
                    assertEquals(model.getOrDefault(k, -1L), tree.lookup(root, k, -1L), "final lookup " + k);
                }
                long[] blocks = {0};
                tree.walkBlocks(root, b -> blocks[0]++);
                assertEquals(space.usedBlocks() - 1, blocks[0], "every allocated block belongs to the tree");
            }
        } finally {
            try {
                kernel.close();
            } finally {
                self.close();
            }
        }
    }

    @Provide
    Arbitrary<Integer> capacities() {
        return Arbitraries.of(5, 6, 7, 16, 255);
    }
}
