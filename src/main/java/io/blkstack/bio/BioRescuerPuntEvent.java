package io.blkstack.bio;

import jdk.jfr.Category;
import jdk.jfr.Description;
import jdk.jfr.Label;
import jdk.jfr.Name;
import jdk.jfr.StackTrace;

/**
 * JFR: a bio set moved the allocating task's pending bios to its rescuer before blocking (seed
 * {@code 000_*}'s fix, DESIGN.md section 4). Committed only while a recording enables it.
 */
@Name("blkstack.BioRescuerPunt")
@Label("Bio Set Rescuer Punt")
@Category({"blkstack", "Forward Progress"})
@Description("A bio set handed the task's pending bios to its rescuer before waiting for a bio")
@StackTrace(false)
public final class BioRescuerPuntEvent extends jdk.jfr.Event {

    @Label("Bio Set")
    public String bioSet;

    @Label("Bios Punted")
    public int bios;
}
