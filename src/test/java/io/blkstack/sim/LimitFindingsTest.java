package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/** Runs that end at a limit (STEP_LIMIT, TIME_LIMIT) say where their tasks are. */
class LimitFindingsTest {

    /** A task that yields forever with virtual time frozen, waiting for a flag nobody sets. */
    static void spinUntilSet(Kernel k, boolean[] flag) {
        while (!flag[0]) {
            k.scheduler().yieldNow(Task.current());
        }
    }

    /** Two tasks spin in {@link #spinUntilSet}; the flag is never set. */
    static final Consumer<Kernel> SPINNERS = k -> {
        boolean[] flag = new boolean[1];
        Task a = k.spawn("spinner-a", TaskKind.USER, () -> spinUntilSet(k, flag));
        Task b = k.spawn("spinner-b", TaskKind.USER, () -> spinUntilSet(k, flag));
        k.scheduler().join(a);
        k.scheduler().join(b);
    };

    // Proves a STEP_LIMIT finding carries the stack of each runnable task: two tasks that yield in a
    // loop without virtual time moving end the run at the step limit, and the explanation lists
    // both under "runnable tasks" with the spinning method on their stacks (it used to show none).
    @Test
    void stepLimitShowsEachRunnableTasksStack() {
        SimResult r = new SimRunner(SimConfig.builder().maxSteps(2_000).build()).runOnce(3, SPINNERS);
        assertEquals(Outcome.STEP_LIMIT, r.outcome(), r.explanation());
        String runnable = r.explanation().substring(r.explanation().indexOf("runnable tasks:"));
        for (String name : new String[] {"spinner-a", "spinner-b"}) {
            int at = runnable.indexOf("task " + name);
            assertTrue(at >= 0, name + " missing: " + runnable);
            assertTrue(runnable.indexOf("LimitFindingsTest.spinUntilSet", at) > at, "no stack for " + name + ": " + runnable);
        }
    }

    // Proves a TIME_LIMIT finding explains the tasks too: a task that sleeps 2 hours at a time waiting
    // for a completion that never comes passes a 1-hour virtual time limit; the explanation names
    // the sleeper's wait and stack, and the runnable-tasks section is there (empty: nothing can run).
    @Test
    void timeLimitExplainsTheTasks() {
        Consumer<Kernel> sleeper = k -> {
            Completion never = new Completion("never completed");
            Task t = k.spawn("sleeper", TaskKind.USER, () -> {
                while (!never.isDone()) {
                    Task.current().sleepFor(7_200_000_000_000L);
                }
            });
            k.scheduler().join(t);
        };
        SimResult r = new SimRunner(SimConfig.builder().maxVirtualNanos(3_600_000_000_000L).build()).runOnce(4, sleeper);
        assertEquals(Outcome.TIME_LIMIT, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("task sleeper"), r.explanation());
        assertTrue(r.explanation().contains("LimitFindingsTest"), r.explanation());
        assertTrue(r.explanation().contains("runnable tasks:\n  (none)"), r.explanation());
    }
}
