package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.sim.BioSetSplitStack;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** Runs {@code blkstack check} in-process on the built-in bio-set splitting stack. */
class CheckCommandTest {

    /** What one in-process run printed and returned. */
    private record Run(int exitCode, String out, String err) {
    }

    private static Run run(String... args) {
        CommandLine commandLine = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        int exitCode = commandLine.execute(args);
        return new Run(exitCode, out.toString(), err.toString());
    }

    // Proves the command reports seed 000's deadlock: the stack without a rescuer under the legacy
    // policies exits 3, names the bio set in the knot and prints a replay command; running that
    // replay command exits 3 again and prints the same knot.
    @Test
    void legacyDeadlockExitsThreeWithKnotAndReplay() {
        Run r = run("check", "--stack", "bioset-split-no-rescuer", "--schedules", "20", "--seed", "1",
                "--policy", "submit-order=legacy", "--policy", "bioset-rescuer=legacy");
        assertEquals(ExitCodes.DEADLOCK, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains(BioSetSplitStack.bioSetName()), r.out());
        Matcher m = Pattern.compile("replay: blkstack check (.*)").matcher(r.out());
        assertTrue(m.find(), r.out());
        assertFalse(r.out().contains("VACUOUS"), r.out());
        String[] args = ("check " + m.group(1).replace("'", "")).split(" ");
        Run replay = run(args);
        assertEquals(ExitCodes.DEADLOCK, replay.exitCode(), replay.out() + replay.err());
        String knot = r.out().substring(r.out().indexOf("wait-for knot:"));
        assertTrue(replay.out().contains(knot.substring(0, knot.indexOf("components:"))), replay.out());
    }

    // Proves the default policies with a rescuer pass: exit 0, no findings, coverage shows punts.
    @Test
    void defaultPoliciesExitZero() {
        Run r = run("check", "--stack", "bioset-split", "--schedules", "30", "--seed", "7", "--strategy", "pct:3");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("findings: 0"), r.out());
        assertTrue(r.out().contains("schedules/s"), r.out());
        assertFalse(r.out().contains("VACUOUS"), r.out());
        assertTrue(r.out().matches("(?s).*bioset\\.rescuer-punts=[1-9].*"), r.out());
    }

    // Proves bad options are usage errors (exit 1) that name the value.
    @Test
    void unknownStackIsUsageError() {
        Run r = run("check", "--stack", "nope");
        assertEquals(ExitCodes.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains("'nope'"), r.err());
    }
}
