package io.blkstack.cli;

import static io.blkstack.cli.CommandRun.run;
import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code blkstack table check}: every example configuration in {@code examples/} is valid and its
 * normalized tables are printed, without creating any backing file; a broken configuration exits 1
 * with the file, the line and the bad value on stderr.
 */
class TableCommandTest {

    @TempDir
    Path tmp;

    private static Path examples() {
        return Path.of(System.getProperty("basedir", "."), "examples");
    }

    @Test
    void everyExampleIsValidAndPrintsItsTables() throws IOException {
        List<Path> files;
        try (Stream<Path> s = Files.list(examples())) {
            files = s.filter(p -> p.toString().endsWith(".yaml")).sorted().toList();
        }
        assertFalse(files.isEmpty(), "no examples in " + examples());
        for (Path f : files) {
            CommandRun r = run("table", "check", f.toString());
            assertEquals(ExitCodes.SUCCESS, r.exitCode(), f + ": " + r.err());
            assertTrue(r.out().contains(": valid"), r.out());
            assertTrue(r.out().contains("mapped:\n"), r.out());
            assertTrue(r.out().contains("exports:\n"), r.out());
        }
        assertFalse(Files.exists(examples().resolve("data")), "table check must not create backing files");
    }

    @Test
    void printsNormalizedTables() throws IOException {
        Path f = tmp.resolve("stack.yaml");
        Files.writeString(f, """
                devices:
                  a: { memory: 1MiB }
                  b: { memory: 1MiB }
                mapped:
                  s: |
                    # comments and extra blanks go away
                    0    4096   striped 2 128   a 0 b 0
                  l: "0 1024 linear s 2048"
                exports:
                  x: { device: l, readonly: true, description: "a slice" }
                """);
        CommandRun r = run("table", "check", f.toString());
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        assertTrue(r.out().contains("  s: 4096 sectors\n    0 4096 striped 2 128 a 0 b 0\n"), r.out());
        assertTrue(r.out().contains("  l: 1024 sectors\n    0 1024 linear s 2048\n"), r.out());
        assertTrue(r.out().contains("  x: l, 512KiB, read-only, \"a slice\""), r.out());
    }

    @Test
    void brokenTableExitsOneNamingTheLine() throws IOException {
        Path f = tmp.resolve("broken.yaml");
        Files.writeString(f, """
                devices:
                  a: { memory: 1MiB }
                mapped:
                  s: |
                    0 1024 linear a 0
                    1024 1024 linear a zz
                exports:
                  x: { device: s }
                """);
        CommandRun r = run("table", "check", f.toString());
        assertEquals(ExitCodes.USAGE, r.exitCode());
        assertTrue(r.err().contains(f + ":6: "), r.err());
        assertTrue(r.err().contains("'zz'"), r.err());
        assertEquals("", r.out());
    }

    @Test
    void missingFileExitsOne() {
        CommandRun r = run("table", "check", tmp.resolve("nope.yaml").toString());
        assertEquals(ExitCodes.USAGE, r.exitCode());
        assertTrue(r.err().contains("nope.yaml"), r.err());
    }
}
