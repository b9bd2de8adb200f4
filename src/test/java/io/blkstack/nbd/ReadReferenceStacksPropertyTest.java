package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.FileDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * Reads by reference over random stacks (issue 16): a stack of remap targets over two files (the
 * base: linear over both, striped over both, or mirror of both; then up to three levels of a
 * linear split at a random sector, a linear shift, snapshot-origin, or crypt), served over TCP
 * while two clients write 4 KiB blocks (each block owned by one writer, versions in order) and two
 * clients read random sector ranges. Every sector carries its own number and its block's version,
 * so each read is checked against what the model allows: the right sector (never another place's
 * or another volume's bytes), a version no older than the last write acknowledged before the read
 * was sent and no newer than the last one sent before its reply came. At the end the whole device
 * reads back as the model. References must have been used when the stack passes them, and never
 * when crypt is in it (the fallback to pages).
 */
class ReadReferenceStacksPropertyTest {

    private static final long MiB = 1L << 20;
    private static final long FILE_BYTES = 2 * MiB;
    private static final int BLOCK = 4096;
    private static final int SECTORS_PER_BLOCK = BLOCK >>> Bio.SECTOR_SHIFT;
    private static final String KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    private static final int WRITERS = 2;
    private static final int READERS = 2;
    private static final int WRITES_PER_WRITER = 150;
    private static final int READS_PER_READER = 60;
    /** Bound on a client's whole run: a hang guard, not a timing assertion. */
    private static final long CLIENT_SECONDS_MAX = 120;

    enum Base { LINEAR, STRIPED, MIRROR }

    enum Kind { SPLIT, SHIFT, ORIGIN, CRYPT }

    record Level(Kind kind, double where) {
    }

    @Provide
    Arbitrary<List<Level>> levels() {
        return Combinators.combine(Arbitraries.of(Kind.class), Arbitraries.doubles().between(0.01, 0.99))
                .as(Level::new).list().ofMaxSize(3);
    }

    @Property(tries = 12)
    void everyReadReturnsWhatTheModelAllows(@ForAll Base base, @ForAll("levels") List<Level> levels,
            @ForAll @net.jqwik.api.constraints.IntRange(min = 0, max = 3) int stripeChunkChoice, @ForAll long seed)
            throws Exception {
        Path dir = Files.createTempDirectory("read-reference-stacks");
        try (TestKernel tk = new TestKernel("read-reference-stacks", 64 * MiB, Policies.defaults(), Faults.NONE)) {
            FileDevice.Options options = FileDevice.Options.defaults().withCreate(true);
            Map<String, BlockDevice> devices = new HashMap<>();
            devices.put("a", FileDevice.open(tk.kernel, "a", dir.resolve("a.img"), FILE_BYTES, options));
            devices.put("b", FileDevice.open(tk.kernel, "b", dir.resolve("b.img"), FILE_BYTES, options));
            long fileSectors = FILE_BYTES >>> Bio.SECTOR_SHIFT;
            int[] chunks = {8, 16, 64, 128};
            String table = switch (base) {
                case LINEAR -> "0 " + fileSectors + " linear a 0\n" + fileSectors + " " + fileSectors + " linear b 0\n";
                case STRIPED -> "0 " + 2 * fileSectors + " striped 2 " + chunks[stripeChunkChoice] + " a 0 b 0\n";
                case MIRROR -> "0 " + fileSectors + " mirror core 1 64 2 a 0 b 0\n";
            };
            MappedDevice top = new MappedDevice(tk.kernel, "s0", Table.parse(tk.kernel, "s0", table, devices::get));
            devices.put("s0", top);
            boolean crypt = false;
            for (int i = 0; i < levels.size(); i++) {
                Level level = levels.get(i);
                long sectors = top.capacitySectors();
                String below = "s" + i;
                String line = switch (level.kind()) {
                    case SPLIT -> {
                        long at = Math.max(1, Math.min(sectors - 1, (long) (sectors * level.where())));
                        yield "0 " + at + " linear " + below + " 0\n" + at + " " + (sectors - at) + " linear " + below + " " + at + "\n";
                    }
                    case SHIFT -> {
                        long by = 1 + (long) (64 * level.where());
                        yield "0 " + (sectors - by) + " linear " + below + " " + by + "\n";
                    }
                    case ORIGIN -> "0 " + sectors + " snapshot-origin " + below + "\n";
                    case CRYPT -> "0 " + sectors + " crypt aes-xts-plain64 " + KEY + " 0 " + below + " 0\n";
                };
                crypt |= level.kind() == Kind.CRYPT;
                String name = "s" + (i + 1);
                top = new MappedDevice(tk.kernel, name, Table.parse(tk.kernel, name, line, devices::get));
                devices.put(name, top);
            }
            assertEquals(!crypt, top.readsByReference(), "capability of the stack");
            run(tk, top, seed);
            long used = tk.kernel.counters().value("file.read-references");
            if (crypt) {
                assertEquals(0, used, "READs held by reference through crypt");
            } else {
                assertTrue(used > 0, "no READ was held by reference through a stack that passes them");
            }
        } finally {
            try (var files = Files.list(dir)) {
                for (Path p : files.toList()) {
                    Files.delete(p);
                }
            }
            Files.delete(dir);
        }
    }

    /** The workload on {@code device}: fills it, runs the writers and readers at once, reads it all back. */
    private void run(TestKernel tk, BlockDevice device, long seed) throws Exception {
        int blocks = (int) ((device.capacitySectors() << Bio.SECTOR_SHIFT) / BLOCK);
        AtomicIntegerArray sent = new AtomicIntegerArray(blocks);
        AtomicIntegerArray acknowledged = new AtomicIntegerArray(blocks);
        NbdServer server = new NbdServer(tk.kernel, List.of(new Export("x", device, false, "")),
                new InetSocketAddress("127.0.0.1", 0));
        ExecutorService clients = Executors.newFixedThreadPool(WRITERS + READERS);
        try {
            server.start();
            InetSocketAddress addr = server.localAddress();
            try (NbdTestClient c = new NbdTestClient(addr).greet()) {
                c.go("x");
                int run = 64;
                for (int b = 0; b < blocks; b += run) {
                    int n = Math.min(run, blocks - b);
                    ByteBuffer data = ByteBuffer.allocate(n * BLOCK);
                    for (int i = 0; i < n; i++) {
                        data.put(block(b + i, 0));
                    }
                    assertEquals(0, c.writeSync((long) b * BLOCK, data.array(), 0));
                }
            }
            CountDownLatch go = new CountDownLatch(1);
            List<Future<String>> results = new ArrayList<>();
            for (int w = 0; w < WRITERS; w++) {
                int writer = w;
                results.add(clients.submit(() -> {
                    Random random = new Random(seed + writer);
                    try (NbdTestClient c = new NbdTestClient(addr).greet()) {
                        c.go("x");
                        go.await();
                        for (int i = 0; i < WRITES_PER_WRITER; i++) {
                            int b = random.nextInt(blocks / WRITERS) * WRITERS + writer;
                            int version = sent.get(b) + 1;
                            sent.set(b, version);
                            int error = c.writeSync((long) b * BLOCK, block(b, version), 0);
                            if (error != 0) {
                                return "write of block " + b + ": error " + error;
                            }
                            acknowledged.set(b, version);
                        }
                        return "";
                    }
                }));
            }
            for (int r = 0; r < READERS; r++) {
                int reader = r;
                results.add(clients.submit(() -> {
                    Random random = new Random(seed - 1 - reader);
                    long sectors = (long) blocks * SECTORS_PER_BLOCK; // a partial last block is never written
                    try (NbdTestClient c = new NbdTestClient(addr).greet()) {
                        if (reader == 0) {
                            c.goStructured("x");
                        } else {
                            c.go("x");
                        }
                        go.await();
                        for (int i = 0; i < READS_PER_READER; i++) {
                            long first = random.nextLong(sectors);
                            int count = (int) Math.min(sectors - first, 1 + random.nextInt(512));
                            int firstBlock = (int) (first / SECTORS_PER_BLOCK);
                            int lastBlock = (int) ((first + count - 1) / SECTORS_PER_BLOCK);
                            int[] oldest = new int[lastBlock - firstBlock + 1];
                            for (int b = firstBlock; b <= lastBlock; b++) {
                                oldest[b - firstBlock] = acknowledged.get(b);
                            }
                            byte[] got = c.readSync(first << Bio.SECTOR_SHIFT, count << Bio.SECTOR_SHIFT);
                            for (int s = 0; s < count; s++) {
                                long sector = first + s;
                                int b = (int) (sector / SECTORS_PER_BLOCK);
                                String wrong = checkSector(got, s, sector, oldest[b - firstBlock], sent.get(b));
                                if (wrong != null) {
                                    return "READ of " + count + " sector(s) at " + first + ": " + wrong;
                                }
                            }
                        }
                        return "";
                    }
                }));
            }
            go.countDown();
            for (Future<String> r : results) {
                assertEquals("", r.get(CLIENT_SECONDS_MAX, TimeUnit.SECONDS));
            }
            try (NbdTestClient c = new NbdTestClient(addr).greet()) {
                c.go("x");
                for (int b = 0; b < blocks; b++) {
                    byte[] got = c.readSync((long) b * BLOCK, BLOCK);
                    for (int s = 0; s < SECTORS_PER_BLOCK; s++) {
                        int v = acknowledged.get(b);
                        String wrong = checkSector(got, s, (long) b * SECTORS_PER_BLOCK + s, v, v);
                        assertEquals(null, wrong, "at the end, block " + b);
                    }
                }
            }
        } finally {
            clients.shutdownNow();
            server.close();
        }
    }

    /** Block {@code b} at {@code version}: each sector starts with its own number and the version. */
    private static byte[] block(int b, int version) {
        ByteBuffer data = ByteBuffer.allocate(BLOCK);
        for (int s = 0; s < SECTORS_PER_BLOCK; s++) {
            long sector = (long) b * SECTORS_PER_BLOCK + s;
            data.position(s << Bio.SECTOR_SHIFT);
            data.putLong(sector).putInt(version);
            byte[] rest = new byte[(1 << Bio.SECTOR_SHIFT) - 12];
            new Random(sector * 1_000_003L + version).nextBytes(rest);
            data.put(rest);
        }
        return data.array();
    }

    /** Null if sector {@code index} of {@code got} is {@code sector} at a version in [oldest, newest]; else what is wrong. */
    private static String checkSector(byte[] got, int index, long sector, int oldest, int newest) {
        ByteBuffer s = ByteBuffer.wrap(got, index << Bio.SECTOR_SHIFT, 1 << Bio.SECTOR_SHIFT);
        long number = s.getLong();
        int version = s.getInt();
        if (number != sector) {
            return "sector " + sector + " returned the bytes of sector " + number;
        }
        if (version < oldest || version > newest) {
            return "sector " + sector + " returned version " + version + ", the model allows " + oldest + ".." + newest;
        }
        // A write of the block in flight during the read may show through part-way (the page cache
        // gives no atomicity between a read and a write of one page): then each byte must still be
        // that of some version the model allows, never another place's.
        byte[][] allowed = new byte[newest - oldest + 1][(1 << Bio.SECTOR_SHIFT) - 12];
        for (int v = oldest; v <= newest; v++) {
            new Random(sector * 1_000_003L + v).nextBytes(allowed[v - oldest]);
        }
        for (int i = 0; i < allowed[0].length; i++) {
            byte b = s.get();
            boolean known = allowed[version - oldest][i] == b;
            for (int v = 0; v < allowed.length && !known && oldest != newest; v++) {
                known = allowed[v][i] == b;
            }
            if (!known) {
                return "sector " + sector + " version " + version + " is torn at byte " + (12 + i)
                        + " (versions " + oldest + ".." + newest + " allowed)";
            }
        }
        return null;
    }
}
