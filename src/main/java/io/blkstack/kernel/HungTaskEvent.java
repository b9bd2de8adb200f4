package io.blkstack.kernel;

import jdk.jfr.Category;
import jdk.jfr.Description;
import jdk.jfr.Label;
import jdk.jfr.Name;
import jdk.jfr.StackTrace;
import jdk.jfr.Timespan;

/**
 * JFR: the hung-task watchdog reported a task blocked past its threshold ({@link HungTaskWatchdog}).
 * Committed only while a recording enables it.
 */
@Name("blkstack.HungTask")
@Label("Hung Task")
@Category({"blkstack", "Forward Progress"})
@Description("A task waited on one thing without progress for longer than the watchdog's threshold")
@StackTrace(false)
public final class HungTaskEvent extends jdk.jfr.Event {

    @Label("Task")
    public String task;

    @Label("Waiting On")
    public String waitingOn;

    @Label("Blocked For")
    @Timespan(Timespan.NANOSECONDS)
    public long blocked;
}
