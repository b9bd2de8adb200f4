package io.blkstack.dm.logwrites;

import io.blkstack.dm.TargetBench;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.FileDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.cli.Main;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.dm.logwrites.LogEntry;
import io.blkstack.dm.logwrites.LogFormat;
import io.blkstack.dm.logwrites.LogReader;
import io.blkstack.dm.logwrites.LogReplay;
import io.blkstack.dm.logwrites.LogSink;
import io.blkstack.dm.logwrites.LogSource;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * dm-log-writes: every acknowledged write is in the log in completion order with its flags, and
 * replaying the log to a mark rebuilds the device byte for byte as it was when the mark was set
 * (checked against snapshots of a byte-array model); the offline CLI does the same on files.
 */
class LogWritesTargetTest {

    private static final int DATA_SECTORS = 1024;

    private static TestKernel kernel(String name) {
        return new TestKernel(name, 64L << 20, Policies.defaults(), Faults.NONE);
    }

    /** Random writes with marks in between; returns the model snapshot at each mark (and "end"). */
    private static Map<String, byte[]> workload(TargetBench b, MappedDevice md, long seed, int marks) {
        Random random = new Random(seed);
        byte[] model = new byte[DATA_SECTORS * Bio.SECTOR_SIZE];
        Map<String, byte[]> snapshots = new LinkedHashMap<>();
        for (int m = 0; m <= marks; m++) {
            int writes = 3 + random.nextInt(8);
            for (int i = 0; i < writes; i++) {
                int sector = random.nextInt(DATA_SECTORS);
                int sectors = 1 + random.nextInt(Math.min(64, DATA_SECTORS - sector));
                byte[] data = new byte[sectors * Bio.SECTOR_SIZE];
                random.nextBytes(data);
                int flags = random.nextInt(5) == 0 ? BioFlags.FUA : 0;
                if (b.write(md, sector, data, flags) != BioStatus.OK) {
                    throw new IllegalStateException("write " + sector + "+" + sectors + " failed");
                }
                System.arraycopy(data, 0, model, sector * Bio.SECTOR_SIZE, data.length);
                if (random.nextInt(6) == 0) {
                    b.flush(md, 0);
                }
            }
            String name = m < marks ? "m" + m : "end";
            if (m < marks) {
                assertEquals("", md.message(0, "mark", name));
            }
            snapshots.put(name, model.clone());
        }
        return snapshots;
    }

    @Test
    void replayToEachMarkReproducesTheDeviceAsItWasThen() throws TableException, IOException {
        try (TestKernel tk = kernel("log-replay"); TargetBench b = new TargetBench(tk.kernel)) {
            TargetBench.Bottom data = b.bottom("a", DATA_SECTORS);
            TargetBench.Bottom log = b.bottom("log", 16384);
            MappedDevice md = b.mapped("0 " + DATA_SECTORS + " log-writes a log\n");
            Map<String, byte[]> snapshots = workload(b, md, 42, 5);
            md.suspend(); // commits the log
            LogWritesTarget target = (LogWritesTarget) md.table().target(0);
            assertTrue(target.isLogging(), target.stopReason());
            assertArrayEquals(snapshots.get("end"), data.data, "the data device itself");

            LogReader reader = new LogReader(LogSource.of(log.data.clone()));
            List<LogEntry> entries = reader.entries();
            assertEquals(target.loggedEntries(), entries.size());
            assertEquals(List.of("0 " + DATA_SECTORS + " log-writes " + entries.size() + " "
                    + (entries.get(entries.size() - 1).logOffset() / 512 + 1
                    + LogFormat.dataBytes(entries.get(entries.size() - 1).nrSectors(),
                            entries.get(entries.size() - 1).flags(), 512) / 512 - 1)),
                    md.status(StatusForm.INFO));
            List<String> marks = new ArrayList<>();
            for (LogEntry e : entries) {
                if (e.isMark()) {
                    marks.add(e.mark());
                }
            }
            assertEquals(List.of("m0", "m1", "m2", "m3", "m4"), marks);
            for (Map.Entry<String, byte[]> s : snapshots.entrySet()) {
                byte[] rebuilt = new byte[DATA_SECTORS * Bio.SECTOR_SIZE];
                LogReplay.Result r = LogReplay.replay(reader, LogSink.of(rebuilt), s.getKey().equals("end") ? null : s.getKey());
                assertArrayEquals(s.getValue(), rebuilt, "replay to " + s.getKey());
                assertTrue(r.writes() > 0);
            }
            // Marks differ from each other, so a replay to the wrong mark would have been caught.
            assertFalse(java.util.Arrays.equals(snapshots.get("m0"), snapshots.get("m1")));
            IllegalArgumentException none = assertThrows(IllegalArgumentException.class,
                    () -> LogReplay.replay(reader, LogSink.of(new byte[16]), "nope"));
            assertTrue(none.getMessage().contains("nope"));
            md.resume();
        }
    }

    /**
     * Proves the log is checksummed: a flip of every 64th bit of the super block, of an entry's
     * header block and of its data fails the read with a message naming the super block or the
     * entry; a log without the checksum marker (as dm-log-writes writes it) is still read.
     */
    @Test
    void flipOfEverySixtyFourthBitOfTheSuperOrAnEntryIsReported() throws TableException, IOException {
        byte[] image;
        try (TestKernel tk = kernel("log-crc"); TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("a", DATA_SECTORS);
            TargetBench.Bottom log = b.bottom("log", 2048);
            MappedDevice md = b.mapped("0 " + DATA_SECTORS + " log-writes a log\n");
            byte[] payload = new byte[2048];
            new Random(3).nextBytes(payload);
            assertEquals(BioStatus.OK, b.write(md, 5, payload, 0));
            md.message(0, "mark", "m");
            ((LogWritesTarget) md.table().target(0)).sync();
            image = log.data.clone();
        }
        LogReader clean = new LogReader(LogSource.of(image));
        assertTrue(clean.hasChecksums());
        List<LogEntry> entries = clean.entries();
        assertEquals(2, entries.size());
        long entryOffset = entries.get(0).logOffset();
        int flips = 0;
        // The super block; entry 0's header block and its 4 data sectors.
        long[][] ranges = {{0, 512, -1}, {entryOffset, 512 + 2048, 0}};
        for (long[] range : ranges) {
            for (long bit = range[0] * 8; bit < (range[0] + range[1]) * 8; bit += 64) {
                byte[] bad = image.clone();
                bad[(int) (bit / 8)] ^= (byte) (1 << (bit & 7));
                String message;
                try {
                    new LogReader(LogSource.of(bad)).entries();
                    message = null;
                } catch (IOException e) {
                    message = e.getMessage();
                }
                String where = range[2] < 0 ? "flip of super block bit " + bit : "flip of entry bit " + bit;
                assertTrue(message != null, where + " passed");
                if (range[2] >= 0 && bit >= (range[0] + 32) * 8) {
                    // past the fields a reader parses first: the checksum names the entry
                    assertTrue(message.startsWith("entry 0 at byte " + entryOffset), where + ": " + message);
                }
                flips++;
            }
        }
        assertEquals((512 + 512 + 2048) * 8 / 64, flips);
        // A log without the marker and checksum (dm-log-writes's own) is read unchecked.
        byte[] plain = image.clone();
        java.util.Arrays.fill(plain, LogFormat.SUPER_MARKER_OFFSET, LogFormat.SUPER_CHECKSUM_OFFSET + 4, (byte) 0);
        LogReader unchecked = new LogReader(LogSource.of(plain));
        assertFalse(unchecked.hasChecksums());
        assertEquals(2, unchecked.entries().size());
    }

    @Test
    void writesFlushesAndFuaAreLoggedWithTheirFlags() throws TableException, IOException {
        try (TestKernel tk = kernel("log-flags"); TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("a", DATA_SECTORS);
            TargetBench.Bottom log = b.bottom("log", 2048);
            MappedDevice md = b.mapped("0 " + DATA_SECTORS + " log-writes a log\n");
            assertEquals(BioStatus.OK, b.write(md, 5, new byte[1024], 0));
            assertEquals(BioStatus.OK, b.write(md, 9, new byte[512], BioFlags.FUA));
            assertEquals(BioStatus.OK, b.flush(md, 0));
            md.message(0, "mark", "after-flush");
            assertEquals(BioStatus.OK, b.write(md, 100, new byte[2048], BioFlags.PREFLUSH));
            ((LogWritesTarget) md.table().target(0)).sync();
            List<String> described = new ArrayList<>();
            for (LogEntry e : new LogReader(LogSource.of(log.data.clone())).entries()) {
                described.add(e.describe());
            }
            assertEquals(List.of("0 write 5+2 -", "1 write 9+1 FUA", "2 flush 0+0 FLUSH", "3 mark after-flush",
                    "4 flush 0+0 FLUSH", "5 write 100+4 -"), described);
            assertThrows(IllegalArgumentException.class, () -> md.message(0, "mark"));
            assertThrows(IllegalArgumentException.class, () -> md.message(0, "unmark", "x"));
        }
    }

    @Test
    void tableRoundTripsAndBadTablesNameTheArgument() throws TableException {
        try (TestKernel tk = kernel("log-table"); TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("a", DATA_SECTORS);
            b.bottom("log", 64);
            try (var t = b.table("0 512 log-writes a log\n")) {
                assertEquals(List.of("0 512 log-writes a log"), t.lines());
            }
            TableException same = assertThrows(TableException.class, () -> b.table("0 512 log-writes a a\n"));
            assertTrue(same.getMessage().contains("data device itself"), same.getMessage());
            TableException count = assertThrows(TableException.class, () -> b.table("0 512 log-writes a\n"));
            assertTrue(count.getMessage().contains("<dev> <log dev>"), count.getMessage());
            TableException big = assertThrows(TableException.class, () -> b.table("0 2048 log-writes a log\n"));
            assertTrue(big.getMessage().contains("fewer"), big.getMessage());
        }
    }

    /**
     * A full log stops logging, I/O goes on, the log stays valid, and the stop is logged once with
     * its reason (before, a user learnt of it only when a mark was refused).
     */
    @Test
    void aFullLogStopsLoggingButIoContinues() throws TableException, IOException {
        ch.qos.logback.classic.Logger targetLog = (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger(
                LogWritesTarget.class);
        ch.qos.logback.core.read.ListAppender<ch.qos.logback.classic.spi.ILoggingEvent> lines =
                new ch.qos.logback.core.read.ListAppender<>();
        lines.start();
        targetLog.addAppender(lines);
        try (TestKernel tk = kernel("log-full"); TargetBench b = new TargetBench(tk.kernel)) {
            TargetBench.Bottom data = b.bottom("a", DATA_SECTORS);
            TargetBench.Bottom log = b.bottom("log", 24);
            MappedDevice md = b.mapped("0 " + DATA_SECTORS + " log-writes a log\n");
            byte[] chunk = new byte[8 * 512];
            new Random(1).nextBytes(chunk);
            for (int i = 0; i < 5; i++) {
                assertEquals(BioStatus.OK, b.write(md, i * 8L, chunk, 0));
            }
            LogWritesTarget target = (LogWritesTarget) md.table().target(0);
            target.sync();
            assertFalse(target.isLogging());
            assertTrue(target.stopReason().contains("full"), target.stopReason());
            assertArrayEquals(chunk, java.util.Arrays.copyOfRange(data.data, 32 * 512, 40 * 512));
            // Two entries of 9 sectors fit after the super block in 24 sectors; the log stays valid.
            assertEquals(2, new LogReader(LogSource.of(log.data.clone())).entries().size());
            List<String> stops = lines.list.stream().map(e -> e.getFormattedMessage())
                    .filter(m -> m.contains("logging stopped")).toList();
            assertEquals(1, stops.size(), lines.list.toString());
            assertTrue(stops.get(0).equals("log-writes onto log: logging stopped (log device log is full at entry 2);"
                    + " later writes reach the data device but not the log, the 2 entries logged so far stay valid"),
                    stops.get(0));
        } finally {
            targetLog.detachAppender(lines);
        }
    }

    @Test
    void cliReplaysAFileLogToAMarkAndListsIt(@TempDir Path dir) throws Exception {
        Path logFile = dir.resolve("log.img");
        Map<String, byte[]> snapshots;
        try (TestKernel tk = kernel("log-cli"); TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("a", DATA_SECTORS);
            b.add("log", FileDevice.open(tk.kernel, "log", logFile, 8L << 20, FileDevice.Options.defaults()
                    .withCreate(true)));
            MappedDevice md = b.mapped("0 " + DATA_SECTORS + " log-writes a log\n");
            snapshots = workload(b, md, 7, 3);
            md.suspend();
            md.resume();
        }
        Path dev = dir.resolve("dev.img");
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        CommandLine cli = Main.commandLine();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        assertEquals(0, cli.execute("log-writes", "replay", logFile.toString(), dev.toString(), "--to", "m1"), err.toString());
        assertTrue(out.toString().contains("to mark m1"), out.toString());
        byte[] rebuilt = new byte[DATA_SECTORS * Bio.SECTOR_SIZE];
        byte[] file = Files.readAllBytes(dev);
        System.arraycopy(file, 0, rebuilt, 0, file.length);
        assertArrayEquals(snapshots.get("m1"), rebuilt);

        out.getBuffer().setLength(0);
        assertEquals(0, cli.execute("log-writes", "list", "--marks", logFile.toString()), err.toString());
        assertEquals(List.of("m0", "m1", "m2"), out.toString().lines().map(l -> l.substring(l.indexOf("mark ") + 5)).toList());
        assertEquals(1, cli.execute("log-writes", "replay", logFile.toString(), dev.toString(), "--to", "zz"));
        assertTrue(err.toString().contains("zz"), err.toString());
        assertEquals(1, cli.execute("log-writes", "list", dev.toString()));
        assertTrue(err.toString().contains("not a write log"), err.toString());
    }
}
