package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import io.blkstack.nbd.NbdServer;
import java.io.File;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A real filesystem on a served stack, where FUSE works: a 192 MiB export (64 MiB linear over one
 * memory device, then 128 MiB striped over two more) is turned into a file by nbdfuse, mkfs.ext4
 * formats it with its inode tables and journal written out, files go in through a loop mount
 * where this machine allows one (root, loop devices; otherwise that part is left out), and
 * {@code e2fsck -fn} finds the filesystem clean, the files read back by debugfs. After FUSE is
 * unmounted the image is copied out of the server with nbdcopy and checked again, so the data is
 * known to have reached the stack, not just a page cache.
 *
 * <p>Skipped (a JUnit assumption) only when {@code /dev/fuse} is missing or nbdfuse, mkfs.ext4 or
 * e2fsck (e2fsprogs, which also has debugfs) is not installed; {@code .ci/run} installs libnbd-bin
 * (nbdfuse, nbdcopy) and fuse3 (fusermount3). Whatever happens, the FUSE mount and any loop
 * mount are taken down before the server stops.
 */
class FilesystemInteropTest {

    private static final long MiB = 1L << 20;
    /** Bound on each external program's run; the whole test stays well under a minute. */
    private static final long PROGRAM_SECONDS_MAX = 30;
    /** Bound on nbdfuse coming up, and on it exiting after the unmount. */
    private static final long FUSE_SECONDS_MAX = 15;
    /** Pause between looks at the mountpoint while nbdfuse comes up. */
    private static final long POLL_NANOS = 10_000_000;
    /** Size of the export: the linear part plus the striped part. */
    private static final long EXPORT_BYTES = 192 * MiB;
    /** Where programs from e2fsprogs and util-linux live when PATH lacks the sbin directories. */
    private static final List<String> SBIN = List.of("/usr/sbin", "/sbin", "/usr/bin", "/bin");

    @TempDir
    Path tmp;

    /** nbdfuse, mkfs.ext4, files written and read back, e2fsck -fn clean through FUSE and on a copy. */
    @Test
    void mkfsExt4ThroughNbdfuseChecksClean() throws Exception {
        assumeTrue(Files.exists(Path.of("/dev/fuse")), "/dev/fuse is missing");
        String nbdfuse = program("nbdfuse");
        String mkfs = program("mkfs.ext4");
        String e2fsck = program("e2fsck");
        String debugfs = program("debugfs");
        assumeTrue(nbdfuse != null, "nbdfuse is not installed");
        assumeTrue(mkfs != null, "mkfs.ext4 is not installed");
        assumeTrue(e2fsck != null && debugfs != null, "e2fsprogs (e2fsck, debugfs) is not installed");

        Path yaml = tmp.resolve("stack.yaml");
        Files.writeString(yaml, """
                memory: 64MiB
                devices:
                  m1: { memory: 64MiB }
                  m2: { memory: 64MiB }
                  m3: { memory: 64MiB }
                mapped:
                  stripe0: |
                    0 262144 striped 2 128 m2 0 m3 0
                  default: |
                    0      131072 linear m1 0
                    131072 262144 linear stripe0 0
                exports:
                  default: { device: default }
                """);
        StackConfig config = StackConfig.load(yaml);
        Path fuseDir = Files.createDirectories(tmp.resolve("fuse"));
        Path disk = fuseDir.resolve("nbd");
        Path fuseLog = tmp.resolve("nbdfuse.log");
        Path mnt = Files.createDirectories(tmp.resolve("mnt"));
        Map<String, Path> files = sourceFiles();
        Path image = tmp.resolve("image.raw");
        List<String> cleanupProblems = new ArrayList<>();
        boolean written = false;

        try (TestKernel tk = new TestKernel("fs-interop", config.memoryBytes(), Policies.defaults(), Faults.NONE);
                Stack stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE)) {
            NbdServer server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            Process fuse = null;
            boolean loopMounted = false;
            try {
                server.start();
                String uri = "nbd://127.0.0.1:" + server.localAddress().getPort() + "/default";
                fuse = new ProcessBuilder(nbdfuse, fuseDir.toString(), uri).redirectErrorStream(true)
                        .redirectOutput(fuseLog.toFile()).start();
                awaitFuseFile(disk, fuse, fuseLog);
                assertEquals(EXPORT_BYTES, Files.size(disk), "nbdfuse's file has the export's size");

                run(mkfs, "-F", "-q", "-L", "blkstack", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                        disk.toString());
                run(e2fsck, "-fn", disk.toString());

                // Files go in through a loop mount only where this machine can loop-mount (root and loop
                // devices); debugfsWriteThroughNbdfuseChecksClean puts files in with debugfs -w instead.
                written = tryLoopMount(disk, mnt);
                loopMounted = written;
                if (written) {
                    Path d = Files.createDirectories(mnt.resolve("d"));
                    for (var e : files.entrySet()) {
                        Files.copy(e.getValue(), d.resolve(e.getKey()));
                    }
                    run("umount", mnt.toString());
                    loopMounted = false;
                }
                String fsck = run(e2fsck, "-fn", disk.toString());
                if (written) {
                    assertTrue(fsck.contains(": " + (files.size() + 12) + "/"), "e2fsck counts the files:\n" + fsck);
                    assertFilesRead(debugfs, disk, files, "through-fuse");
                }
            } finally {
                if (loopMounted) {
                    unmountLoop(mnt, cleanupProblems);
                }
                if (fuse != null) {
                    unmountFuse(fuseDir, fuse, fuseLog, cleanupProblems);
                }
                server.close();
            }
            assertEquals(List.of(), cleanupProblems, "taking the mounts down");
            assertEquals(List.of(), stack.flushAll());

            // A fresh server on the same stack: the filesystem came through FUSE into the devices.
            NbdServer again = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            try {
                again.start();
                String copy = program("nbdcopy");
                assertNotNull(copy, "nbdcopy comes with nbdfuse in libnbd-bin");
                run(copy, "nbd://127.0.0.1:" + again.localAddress().getPort() + "/default", image.toString());
            } finally {
                again.close();
            }
        }
        assertEquals(EXPORT_BYTES, Files.size(image));
        run(e2fsck, "-fn", image.toString());
        if (written) {
            assertFilesRead(debugfs, image, files, "from-copy");
        }
    }

    /**
     * debugfs -w writes a file into an ext4 image through nbdfuse: it updates single superblock and
     * group descriptor fields with writes of a few bytes at odd offsets, which nbdfuse passes on as
     * they are. The server serves them by read-modify-write (minimum block size 1), so the write
     * succeeds, {@code e2fsck -fn} finds the filesystem clean, and the file reads back unchanged,
     * through FUSE and, after the unmount, from a copy taken out of the server with nbdcopy.
     */
    @Test
    void debugfsWriteThroughNbdfuseChecksClean() throws Exception {
        assumeTrue(Files.exists(Path.of("/dev/fuse")), "/dev/fuse is missing");
        String nbdfuse = program("nbdfuse");
        String mkfs = program("mkfs.ext4");
        String e2fsck = program("e2fsck");
        String debugfs = program("debugfs");
        assumeTrue(nbdfuse != null, "nbdfuse is not installed");
        assumeTrue(mkfs != null, "mkfs.ext4 is not installed");
        assumeTrue(e2fsck != null && debugfs != null, "e2fsprogs (e2fsck, debugfs) is not installed");

        Path yaml = tmp.resolve("small.yaml");
        Files.writeString(yaml, """
                memory: 16MiB
                devices:
                  m: { memory: 64MiB }
                exports:
                  default: { device: m }
                """);
        StackConfig config = StackConfig.load(yaml);
        Path fuseDir = Files.createDirectories(tmp.resolve("fuse"));
        Path disk = fuseDir.resolve("nbd");
        Path fuseLog = tmp.resolve("nbdfuse.log");
        Path image = tmp.resolve("image.raw");
        Path source = tmp.resolve("source");
        byte[] data = new byte[300_000 + 17];
        new Random(12).nextBytes(data);
        Files.write(source, data);
        List<String> cleanupProblems = new ArrayList<>();

        try (TestKernel tk = new TestKernel("fs-debugfs", config.memoryBytes(), Policies.defaults(), Faults.NONE);
                Stack stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE)) {
            NbdServer server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            Process fuse = null;
            try {
                server.start();
                String uri = "nbd://127.0.0.1:" + server.localAddress().getPort() + "/default";
                fuse = new ProcessBuilder(nbdfuse, fuseDir.toString(), uri).redirectErrorStream(true)
                        .redirectOutput(fuseLog.toFile()).start();
                awaitFuseFile(disk, fuse, fuseLog);
                run(mkfs, "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", disk.toString());
                String written = run(debugfs, "-w", "-R", "write " + source + " f", disk.toString());
                assertFalse(written.contains("error") || written.contains("Invalid"), "debugfs -w:\n" + written);
                run(e2fsck, "-fn", disk.toString());
                assertDebugfsReadsBack(debugfs, disk, "f", data, "through-fuse");
            } finally {
                if (fuse != null) {
                    unmountFuse(fuseDir, fuse, fuseLog, cleanupProblems);
                }
                server.close();
            }
            assertEquals(List.of(), cleanupProblems, "taking the mount down");
            assertEquals(List.of(), stack.flushAll());
            NbdServer again = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            try {
                again.start();
                String copy = program("nbdcopy");
                assertNotNull(copy, "nbdcopy comes with nbdfuse in libnbd-bin");
                run(copy, "nbd://127.0.0.1:" + again.localAddress().getPort() + "/default", image.toString());
            } finally {
                again.close();
            }
        }
        run(e2fsck, "-fn", image.toString());
        assertDebugfsReadsBack(debugfs, image, "f", data, "from-copy");
    }

    /** Dumps {@code /name} out of the filesystem in {@code fs} with debugfs and compares it with {@code data}. */
    private void assertDebugfsReadsBack(String debugfs, Path fs, String name, byte[] data, String label)
            throws Exception {
        Path out = tmp.resolve(label + "-" + name);
        String text = run(debugfs, "-R", "dump /" + name + " " + out, fs.toString());
        assertTrue(Files.exists(out), label + ": debugfs could not read /" + name + ":\n" + text);
        assertArrayEquals(data, Files.readAllBytes(out), label + ": /" + name + " reads back changed");
    }

    /** Seeded random files of several sizes, the largest crossing many stripe chunks. */
    private Map<String, Path> sourceFiles() throws Exception {
        Path src = Files.createDirectories(tmp.resolve("src"));
        Map<String, Path> files = new LinkedHashMap<>();
        Random random = new Random(11);
        int[] sizes = {1, 4096, 65536 + 17, 256 * 1024, 1024 * 1024 + 512, 12 * 1024 * 1024};
        for (int i = 0; i < sizes.length; i++) {
            byte[] data = new byte[sizes[i]];
            random.nextBytes(data);
            Path f = src.resolve("f" + i);
            Files.write(f, data);
            files.put("f" + i, f);
        }
        return files;
    }

    /** Waits, on the kernel's clock, until nbdfuse shows {@code disk}; fails if nbdfuse exits first. */
    private static void awaitFuseFile(Path disk, Process fuse, Path log) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(FUSE_SECONDS_MAX);
        while (!Files.exists(disk)) {
            if (!fuse.isAlive()) {
                fail("nbdfuse exited with " + fuse.exitValue() + " before showing " + disk + ":\n"
                        + Files.readString(log, StandardCharsets.UTF_8));
            }
            if (System.nanoTime() > deadline) {
                fail("nbdfuse did not show " + disk + " in " + FUSE_SECONDS_MAX + " s:\n"
                        + Files.readString(log, StandardCharsets.UTF_8));
            }
            Task.current().sleepFor(POLL_NANOS);
        }
    }

    /** Loop-mounts {@code disk} at {@code mnt} if this machine allows it (root, loop devices). */
    private boolean tryLoopMount(Path disk, Path mnt) throws Exception {
        if (program("mount") == null || program("umount") == null) {
            return false;
        }
        Result r = exec("mount", "-o", "loop", disk.toString(), mnt.toString());
        return r.exit == 0;
    }

    /** Reads every file back out of the filesystem in {@code fs} with debugfs and compares checksums. */
    private void assertFilesRead(String debugfs, Path fs, Map<String, Path> files, String label) throws Exception {
        Path out = Files.createDirectories(tmp.resolve(label));
        StringBuilder commands = new StringBuilder();
        for (String name : files.keySet()) {
            commands.append("dump /d/").append(name).append(' ').append(out.resolve(name)).append('\n');
        }
        Path script = tmp.resolve(label + ".debugfs");
        Files.writeString(script, commands);
        String text = run(debugfs, "-f", script.toString(), fs.toString());
        for (var e : files.entrySet()) {
            Path back = out.resolve(e.getKey());
            assertTrue(Files.exists(back), label + ": debugfs could not read /d/" + e.getKey() + ":\n" + text);
            assertEquals(Programs.sha256(e.getValue()), Programs.sha256(back), label + ": /d/" + e.getKey() + " reads back changed");
        }
    }

    /** Unmounts the loop mount; lazily if it is busy. Never throws: problems go to the list. */
    private void unmountLoop(Path mnt, List<String> problems) {
        try {
            if (exec("umount", mnt.toString()).exit != 0) {
                Result lazy = exec("umount", "-l", mnt.toString());
                problems.add("loop mount " + mnt + " needed a lazy unmount (exit " + lazy.exit + "): " + lazy.text);
            }
        } catch (Exception e) {
            problems.add("unmounting " + mnt + ": " + e);
        }
    }

    /**
     * Unmounts FUSE at {@code dir} (fusermount3, fusermount, then umount) and waits for nbdfuse to
     * exit cleanly; if it will not, kills it and detaches the mount lazily. Never throws.
     */
    private void unmountFuse(Path dir, Process fuse, Path log, List<String> problems) {
        try {
            List<String> tried = new ArrayList<>();
            boolean unmounted = false;
            for (String[] command : List.of(new String[] {"fusermount3", "-u"}, new String[] {"fusermount", "-u"},
                    new String[] {"umount"})) {
                if (program(command[0]) == null) {
                    continue;
                }
                List<String> argv = new ArrayList<>(List.of(command));
                argv.add(dir.toString());
                Result r = exec(argv.toArray(String[]::new));
                if (r.exit == 0) {
                    unmounted = true;
                    break;
                }
                tried.add(String.join(" ", argv) + " -> " + r.exit + ": " + r.text.strip());
            }
            if (!unmounted) {
                problems.add("could not unmount " + dir + ": " + tried);
            }
            if (!fuse.waitFor(FUSE_SECONDS_MAX, TimeUnit.SECONDS)) {
                fuse.destroyForcibly().waitFor(FUSE_SECONDS_MAX, TimeUnit.SECONDS);
                problems.add("nbdfuse did not exit after the unmount; killed");
            } else if (fuse.exitValue() != 0) {
                problems.add("nbdfuse exited with " + fuse.exitValue() + ":\n"
                        + Files.readString(log, StandardCharsets.UTF_8));
            }
            if (!unmounted || fuse.exitValue() != 0) {
                // a dead nbdfuse leaves the mountpoint disconnected; detach it so the temp dir goes away
                if (program("fusermount3") != null) {
                    exec("fusermount3", "-uz", dir.toString());
                } else if (program("umount") != null) {
                    exec("umount", "-l", dir.toString());
                }
            }
        } catch (Exception e) {
            problems.add("unmounting " + dir + ": " + e);
        }
    }

    /** A finished program's exit code and output. */
    private record Result(int exit, String text) {
    }

    /** Runs a program within the bound and returns its exit code and output (stdout and stderr). */
    private Result exec(String... command) throws Exception {
        String resolved = program(command[0]);
        if (resolved != null) {
            command = command.clone();
            command[0] = resolved;
        }
        Path log = Files.createTempFile(tmp, "program", ".txt");
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        boolean ended = p.waitFor(PROGRAM_SECONDS_MAX, TimeUnit.SECONDS);
        if (!ended) {
            p.destroyForcibly().waitFor(PROGRAM_SECONDS_MAX, TimeUnit.SECONDS);
        }
        String text = Files.readString(log, StandardCharsets.UTF_8);
        if (!ended) {
            fail(String.join(" ", command) + " ran over " + PROGRAM_SECONDS_MAX + " s:\n" + text);
        }
        return new Result(p.exitValue(), text);
    }

    /** Runs a program; returns its output; fails on a non-zero exit or a run over the bound. */
    private String run(String... command) throws Exception {
        Result r = exec(command);
        assertEquals(0, r.exit, String.join(" ", command) + " failed:\n" + r.text);
        return r.text;
    }

    /** The program's path: on PATH, or in the sbin directories; null when not installed. */
    private static String program(String name) {
        if (name.contains("/")) {
            return Files.isExecutable(Path.of(name)) ? name : null;
        }
        List<String> dirs = new ArrayList<>(List.of(System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)));
        dirs.addAll(SBIN);
        for (String dir : dirs) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, name))) {
                return Path.of(dir, name).toString();
            }
        }
        return null;
    }
}
