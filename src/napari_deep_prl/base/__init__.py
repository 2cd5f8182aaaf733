"""Foundation every wing uses: errors, progress, file names, safe writing of outputs."""
