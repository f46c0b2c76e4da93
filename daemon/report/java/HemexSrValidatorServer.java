// SPDX-License-Identifier: Apache-2.0
// A long-lived pixelmed DicomSRValidator: the JVM start and the validator's XSLT
// compilation (most of the 5-10 s a one-shot DicomSRValidator run takes) are paid once.
// Reads one file path per line on stdin; for each, prints what
// `DicomSRValidator <path>` prints (the same options as its command line defaults),
// then a line "@@HEMEX-END@@". Started by daemon/report/warm_validator.py with
// `java <this file>` (source-file mode, JDK 11 and later).
import com.pixelmed.validate.DicomSRValidator;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;

public class HemexSrValidatorServer {
    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        DicomSRValidator validator = new DicomSRValidator();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        out.println("@@HEMEX-READY@@");
        String path;
        while ((path = in.readLine()) != null) {
            String result;
            try {
                // describe=false, matchCase=true, ambiguous=false, order=false, templateId=false:
                // the command line's defaults.
                result = validator.validate(path, false, true, false, false, false);
            } catch (Exception e) {
                StringWriter trace = new StringWriter();
                e.printStackTrace(new PrintWriter(trace));
                result = "Error: validator exception: " + trace;
            }
            out.println(result);
            out.println("@@HEMEX-END@@");
        }
    }
}
