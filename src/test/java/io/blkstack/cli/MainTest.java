package io.blkstack.cli;

import static io.blkstack.cli.CommandRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;

/**
 * Runs the {@code blkstack} command line in-process and checks what a user sees: help lists the
 * subcommands, {@code --version} prints the version from pom.xml (so resource filtering works),
 * and the exit codes follow DESIGN.md section 8.
 */
class MainTest {

    /** The project's own version, read from pom.xml rather than from the filtered resource. */
    private static String pomVersion() throws IOException {
        Path pom = Path.of(System.getProperty("basedir", "."), "pom.xml");
        String text = Files.readString(pom);
        Matcher m = Pattern.compile("<artifactId>blkstack</artifactId>\\s*<version>([^<]+)</version>")
                .matcher(text);
        assertTrue(m.find(), "no project version in " + pom.toAbsolutePath());
        return m.group(1).strip();
    }

    @Test
    void helpListsTheSubcommandsAndExitCodes() {
        CommandRun r = run("--help");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        assertTrue(r.out().contains("Usage: blkstack"), r.out());
        assertTrue(r.out().matches("(?s).*\\n\\s+serve\\s+.*"), r.out());
        assertTrue(r.out().matches("(?s).*\\n\\s+bench\\s+.*"), r.out());
        assertTrue(r.out().contains("--version"), r.out());
        assertTrue(r.out().contains("deadlock"), r.out());
    }

    @Test
    void helpFollowsNestedSubcommands() {
        CommandRun r = run("help", "scenario", "run");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        assertTrue(r.out().startsWith("Usage: blkstack scenario run "), r.out());
        assertTrue(r.out().contains("--policy"), r.out());
        CommandRun scenario = run("help", "scenario");
        assertEquals(ExitCodes.SUCCESS, scenario.exitCode(), scenario.err());
        assertTrue(scenario.out().startsWith("Usage: blkstack scenario "), scenario.out());
        assertEquals(run("scenario", "run", "--help").out(), r.out());
        assertEquals(run("--help").out(), run("help").out());
    }

    /**
     * Proves {@code scenario list --variants} gives one line per variant of every scenario, with
     * the registry's labels and kinds (bench/fixed-rows.sh runs the fixed rows one at a time from it).
     */
    @Test
    void scenarioListVariantsNamesEveryRow() {
        CommandRun r = run("scenario", "list", "--variants");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        java.util.List<String> expected = new java.util.ArrayList<>();
        java.util.List<io.blkstack.scenario.Scenario> all = new java.util.ArrayList<>(io.blkstack.scenario.ScenarioRegistry.all());
        all.addAll(io.blkstack.scenario.ScenarioRegistry.hard());
        for (io.blkstack.scenario.Scenario s : all) {
            for (io.blkstack.scenario.Scenario.Variant v : s.variants()) {
                expected.add(s.name() + " " + v.label() + " " + (v.legacy() ? "legacy" : "fixed") + " "
                        + (v.expectFinding() ? "finding" : "clean"));
            }
        }
        java.util.List<String> lines = r.out().lines().map(l -> l.strip().replaceAll("\\s+", " ")).toList();
        assertEquals(expected, lines);
        assertTrue(lines.contains("bioset-rescuer depth-first-only fixed finding"), r.out());
        assertTrue(lines.contains("split-worker fixed fixed clean"), r.out());
    }

    @Test
    void helpOfAnUnknownSubcommandIsAUsageErrorNamingIt() {
        CommandRun r = run("help", "scenario", "no-such-command");
        assertEquals(ExitCodes.USAGE, r.exitCode());
        assertTrue(r.err().contains("'no-such-command'"), r.err());
    }

    @Test
    void benchHelpListsStack() {
        CommandRun r = run("bench", "--help");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        assertTrue(r.out().matches("(?s).*\\n\\s+stack\\s+.*"), r.out());
    }

    @Test
    void serveHelpShowsDefaults() {
        CommandRun r = run("serve", "--help");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        assertTrue(r.out().contains("127.0.0.1:10809"), r.out());
        assertTrue(r.out().contains("64MiB"), r.out());
    }

    @Test
    void versionIsTheProjectVersion() throws IOException {
        String version = pomVersion();
        assertNotEquals("unknown", BlkstackVersion.projectVersion());
        CommandRun r = run("--version");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        assertTrue(r.out().startsWith("blkstack " + version + System.lineSeparator()), r.out());
        assertEquals(version, BlkstackVersion.projectVersion());
        CommandRun sub = run("bench", "stack", "--version");
        assertEquals(ExitCodes.SUCCESS, sub.exitCode(), sub.err());
        assertEquals(r.out(), sub.out());
    }

    @Test
    void serveWithAMissingConfigIsAUsageError() {
        CommandRun r = run("serve", "--config", "no-such-config.yaml");
        assertEquals(ExitCodes.USAGE, r.exitCode());
        assertTrue(r.err().contains("no-such-config.yaml"), r.err());
    }

    @Test
    void noSubcommandIsAUsageError() {
        assertEquals(ExitCodes.USAGE, run().exitCode());
        assertEquals(ExitCodes.USAGE, run("bench").exitCode());
    }

    @Test
    void unknownOptionIsAUsageError() {
        CommandRun r = run("serve", "--no-such-option");
        assertEquals(ExitCodes.USAGE, r.exitCode());
        assertTrue(r.err().contains("--no-such-option"), r.err());
    }

    @Test
    void badSizeIsAUsageErrorNamingTheValue() {
        CommandRun r = run("serve", "--memory", "64MB");
        assertEquals(ExitCodes.USAGE, r.exitCode());
        assertTrue(r.err().contains("'64MB'"), r.err());
    }

    @Test
    void benchStackPrintsOneRowPerDepthWithItsRatioToTheFirst() {
        CommandRun r = run("bench", "stack", "--device", "memory", "--layers", "1,3", "--seconds", "1",
                "--block-size", "64KiB", "--memory", "16MiB");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.err());
        assertTrue(r.out().contains("65536-byte bios"), r.out());
        assertTrue(r.out().matches("(?s).*\\n\\s+1\\s+\\d+\\s+[\\d.]+\\s+1\\.00\\n.*"), r.out());
        assertTrue(r.out().matches("(?s).*\\n\\s+3\\s+\\d+\\s+[\\d.]+\\s+[\\d.]+\\n.*"), r.out());
    }

    @Test
    void benchStackRejectsOutOfRangeValuesAsUsageErrors() {
        CommandRun device = run("bench", "stack", "--device", "floppy");
        assertEquals(ExitCodes.USAGE, device.exitCode());
        assertTrue(device.err().contains("floppy"), device.err());
        CommandRun layers = run("bench", "stack", "--layers", "1,0");
        assertEquals(ExitCodes.USAGE, layers.exitCode());
        assertTrue(layers.err().contains("'0'"), layers.err());
        CommandRun blockSize = run("bench", "stack", "--block-size", "1000");
        assertEquals(ExitCodes.USAGE, blockSize.exitCode());
        assertTrue(blockSize.err().contains("'1000'"), blockSize.err());
    }
}
