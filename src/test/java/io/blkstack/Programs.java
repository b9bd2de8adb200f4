package io.blkstack;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.concurrent.TimeUnit;

/**
 * External programs for the interop tests (fio, qemu-io, nbdinfo, nbdcopy, nbdkit): whether one
 * is installed, running one within a bound, and the SHA-256 of a file they wrote.
 */
public final class Programs {

    /** Bytes hashed at a time. */
    private static final int HASH_BLOCK_BYTES = 1 << 20;

    private Programs() {
    }

    /** Whether {@code program} is an executable on PATH. */
    public static boolean installed(String program) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (Files.isExecutable(Path.of(dir, program))) {
                return true;
            }
        }
        return false;
    }

    /**
     * Runs a program in {@code dir} (which also takes its output log); returns stdout and stderr;
     * fails on a non-zero exit or a run over {@code secondsMax} (the program is then killed).
     */
    public static String run(Path dir, long secondsMax, String... command) throws Exception {
        Path log = Files.createTempFile(dir, "program", ".txt");
        Process p = new ProcessBuilder(command).directory(dir.toFile()).redirectErrorStream(true)
                .redirectOutput(log.toFile()).start();
        boolean ended = p.waitFor(secondsMax, TimeUnit.SECONDS);
        if (!ended) {
            p.destroyForcibly();
        }
        String text = Files.readString(log, StandardCharsets.UTF_8);
        assertTrue(ended, String.join(" ", command) + " ran over " + secondsMax + " s:\n" + text);
        assertEquals(0, p.exitValue(), String.join(" ", command) + " failed:\n" + text);
        return text;
    }

    /**
     * The fio command line of job {@code name} that writes {@code size} at random in blocks of
     * {@code blockSize} over the NBD export at {@code uri}, 16 deep, then reads it all back
     * against crc32c checksums and stops at the first mismatch (the same random sequence each run).
     */
    public static String[] fioVerify(String name, String uri, String blockSize, String size) {
        return new String[] {"fio", "--name=" + name, "--ioengine=nbd", "--uri=" + uri, "--rw=randwrite",
            "--bs=" + blockSize, "--size=" + size, "--verify=crc32c", "--iodepth=16", "--do_verify=1",
            "--verify_fatal=1", "--randrepeat=1"};
    }

    /** The SHA-256 of {@code file}'s contents, in lower-case hex. */
    public static String sha256(Path file) throws Exception {
        MessageDigest sha = MessageDigest.getInstance("SHA-256");
        byte[] block = new byte[HASH_BLOCK_BYTES];
        try (InputStream in = Files.newInputStream(file)) {
            for (int n; (n = in.read(block)) > 0; ) {
                sha.update(block, 0, n);
            }
        }
        return HexFormat.of().formatHex(sha.digest());
    }
}
